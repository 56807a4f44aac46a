//! (being written)
use super::{Places, PlacesError, Query};
use crate::config::PlacesConfig;
use futures::future::BoxFuture;
use serde_json::Value;
pub struct GoogleLegacy;
impl GoogleLegacy {
    pub fn new(_: &PlacesConfig) -> Result<GoogleLegacy, PlacesError> {
        todo!()
    }
}
impl Places for GoogleLegacy {
    fn nearby(&self, _: Query) -> BoxFuture<'static, Result<Value, PlacesError>> {
        todo!()
    }
}
