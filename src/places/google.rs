//! (being written)
use super::{Places, PlacesError, Query};
use crate::config::PlacesConfig;
use futures::future::BoxFuture;
use serde_json::Value;
pub struct Google;
impl Google {
    pub fn new(_: &PlacesConfig) -> Result<Google, PlacesError> {
        todo!()
    }
}
impl Places for Google {
    fn nearby(&self, _: Query) -> BoxFuture<'static, Result<Value, PlacesError>> {
        todo!()
    }
}
