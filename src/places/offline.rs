//! The offline places backend: GeoNames' populated places (cities1000,
//! CC BY 4.0), bundled in the binary, searched with a 1-degree grid.
//!
//! Answers never leave the process, so they are deterministic and need no
//! API key: results are the places within the radius, most populous first.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::{Places, PlacesError, Query};

/// The bundled data; see data/README.md for its origin and how to rebuild it.
const BUNDLED_TSV: &str = include_str!("../../data/places.tsv");

/// Mean Earth radius (IUGG), in metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Shown to clients with every answer, as GeoNames' licence requires.
const ATTRIBUTION: &str = "Place data from <a href=\"https://www.geonames.org/\">GeoNames</a>, \
     licensed under <a href=\"https://creativecommons.org/licenses/by/4.0/\">CC BY 4.0</a>";

const FIELDS: usize = 7;

/// Grid of 1-degree cells: rows by latitude from -90, columns by longitude
/// from -180.
const ROWS: usize = 180;
const COLS: usize = 360;

/// Slack for rounding when deciding which cells a search touches and which
/// places in them are worth measuring; distances are checked exactly
/// afterwards, so extra cells and places cost only time.
const CELL_SLACK_DEG: f64 = 1e-6;

/// Places within a radius, from data held in memory.
#[derive(Clone)]
pub struct Offline {
    index: Arc<Index>,
}

impl Offline {
    /// The bundled GeoNames data, parsed once per process and shared.
    pub fn bundled() -> Offline {
        static BUNDLED: OnceLock<Arc<Index>> = OnceLock::new();
        let index = BUNDLED.get_or_init(|| {
            Arc::new(
                Index::parse(Cow::Borrowed(BUNDLED_TSV)).unwrap_or_else(|e| {
                    // A unit test checks the bundled file, so this is a broken
                    // build; answer ZERO_RESULTS rather than take the node down.
                    tracing::error!(error = %e, "bundled places data is malformed");
                    Index::empty()
                }),
            )
        });
        Offline {
            index: Arc::clone(index),
        }
    }

    /// Places from TSV text in the format of data/places.tsv: lines
    /// `geonameid name lat lon countrycode admin1code population` separated
    /// by tabs, LF or CR LF ended; blank lines and lines starting with `#`
    /// are skipped. Errors name the first bad line by number.
    pub fn from_tsv(text: &str) -> Result<Offline, String> {
        Ok(Offline {
            index: Arc::new(Index::parse(Cow::Owned(text.to_owned()))?),
        })
    }

    /// How many places this backend knows.
    pub fn len(&self) -> usize {
        self.index.places.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.places.is_empty()
    }

    /// The legacy-shaped answer for `query`.
    fn answer(&self, query: &Query) -> Value {
        let index = &*self.index;
        let results: Vec<Value> = index
            .search(query)
            .into_iter()
            .map(|hit| index.result(hit.place))
            .collect();
        let status = if results.is_empty() {
            "ZERO_RESULTS"
        } else {
            "OK"
        };
        json!({
            "html_attributions": [ATTRIBUTION],
            "results": results,
            "status": status,
        })
    }
}

impl Places for Offline {
    fn nearby(&self, query: Query) -> BoxFuture<'static, Result<Value, PlacesError>> {
        // A few cells of in-memory data: cheaper to answer now than to spawn.
        Box::pin(std::future::ready(Ok(self.answer(&query))))
    }
}

/// A byte range of the index's text, so that the bundled data is never copied.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

#[derive(Debug, Clone, Copy)]
struct Place {
    lat: f64,
    lon: f64,
    population: u64,
    id: u32,
    name: Span,
    country: Span,
    admin1: Span,
}

/// A place within the radius of a search.
#[derive(Debug, Clone, Copy)]
struct Hit {
    place: u32,
    population: u64,
    id: u32,
    distance_m: f64,
}

struct Index {
    text: Cow<'static, str>,
    places: Vec<Place>,
    grid: Grid,
}

impl Index {
    fn empty() -> Index {
        Index {
            text: Cow::Borrowed(""),
            places: Vec::new(),
            grid: Grid::build(&[]),
        }
    }

    fn parse(text: Cow<'static, str>) -> Result<Index, String> {
        if u32::try_from(text.len()).is_err() {
            return Err(format!("places data too large: {} bytes", text.len()));
        }
        let mut places = Vec::with_capacity(text.len() / 48);
        // One pass over the bytes finding both tabs and line ends: splitting
        // lines and then fields took most of the load time.
        let bytes = text.as_bytes();
        let mut tabs = [0usize; FIELDS - 1];
        let (mut tab_count, mut line_start, mut number) = (0usize, 0usize, 1usize);
        let ends = bytes.iter().copied().chain(std::iter::once(b'\n'));
        for (at, byte) in ends.enumerate() {
            match byte {
                b'\t' => {
                    if let Some(slot) = tabs.get_mut(tab_count) {
                        *slot = at;
                    }
                    tab_count += 1;
                }
                b'\n' => {
                    let line = Line {
                        start: line_start,
                        end: at,
                        tabs: &tabs,
                        tab_count,
                    };
                    if let Some(place) = line
                        .parse(&text)
                        .map_err(|e| format!("places data line {number}: {e}"))?
                    {
                        places.push(place);
                    }
                    (tab_count, line_start, number) = (0, at + 1, number + 1);
                }
                _ => {}
            }
        }
        let grid = Grid::build(&places);
        Ok(Index { text, places, grid })
    }

    fn text_of(&self, span: Span) -> &str {
        self.text
            .get(span.start as usize..span.end as usize)
            .unwrap_or("")
    }

    /// The places within `query.radius_m` of the query point, best first,
    /// at most `query.bound` of them.
    fn search(&self, query: &Query) -> Vec<Hit> {
        let Some(cells) = CellRange::around(query) else {
            return Vec::new();
        };
        // No point is nearer than its difference in latitude, so a place
        // outside the query's band of latitudes is out of reach without any
        // trigonometry: most of a cell, for all but the widest searches.
        let (lat, reach) = (query.lat.clamp(-90.0, 90.0), reach_deg(query.radius_m));
        let mut hits = Vec::new();
        for (row, col) in cells.iter() {
            for &i in self.grid.cell(row, col) {
                let Some(place) = self.places.get(i as usize) else {
                    continue;
                };
                if (place.lat - lat).abs() > reach {
                    continue;
                }
                let distance_m = haversine_m(query.lat, query.lon, place.lat, place.lon);
                if distance_m <= query.radius_m {
                    hits.push(Hit {
                        place: i,
                        population: place.population,
                        id: place.id,
                        distance_m,
                    });
                }
            }
        }
        rank(&mut hits, query.bound);
        hits
    }

    /// One entry of the legacy response's `results`.
    fn result(&self, i: u32) -> Value {
        let Some(place) = self.places.get(i as usize) else {
            return Value::Null;
        };
        let name = self.text_of(place.name);
        let admin1 = self.text_of(place.admin1);
        let country = self.text_of(place.country);
        // Numeric admin1 codes ("08") mean nothing to a reader; letter codes
        // are abbreviations (CA, ENG) worth showing.
        let mut vicinity = vec![name];
        if !admin1.is_empty() && admin1.bytes().all(|b| b.is_ascii_alphabetic()) {
            vicinity.push(admin1);
        }
        if !country.is_empty() {
            vicinity.push(country);
        }
        json!({
            "geometry": {"location": {"lat": place.lat, "lng": place.lon}},
            "name": name,
            "place_id": format!("geonames:{}", place.id),
            "types": ["locality", "political"],
            "vicinity": vicinity.join(", "),
        })
    }
}

/// Sorts by prominence (population, then nearness, then id so the order is
/// total) and keeps the first `bound`.
fn rank(hits: &mut Vec<Hit>, bound: usize) {
    let order = |a: &Hit, b: &Hit| {
        b.population
            .cmp(&a.population)
            .then(a.distance_m.total_cmp(&b.distance_m))
            .then(a.id.cmp(&b.id))
    };
    if bound == 0 {
        hits.clear();
        return;
    }
    // A 50 km search in a dense region can hold thousands of places; only
    // the best `bound` need a full sort.
    if hits.len() > bound {
        hits.select_nth_unstable_by(bound - 1, order);
        hits.truncate(bound);
    }
    hits.sort_unstable_by(order);
}

/// One line of the TSV, as byte offsets into the whole text.
struct Line<'a> {
    start: usize,
    /// Just past the last byte, before the LF.
    end: usize,
    /// Offsets of the first tabs in the line.
    tabs: &'a [usize; FIELDS - 1],
    tab_count: usize,
}

impl Line<'_> {
    /// The place on this line, or None for a blank or `#` comment line.
    fn parse(&self, text: &str) -> Result<Option<Place>, String> {
        let line = text.get(self.start..self.end).unwrap_or("");
        if line.starts_with('#') || (self.tab_count == 0 && line.trim().is_empty()) {
            return Ok(None);
        }
        let found = self.tab_count + 1;
        if found != FIELDS {
            return Err(format!(
                "expected {FIELDS} tab-separated fields, found {found}"
            ));
        }
        let t = self.tabs;
        // The last field runs to the line end, less the CR of a CR LF.
        let end = if line.ends_with('\r') {
            self.end - 1
        } else {
            self.end
        };
        let spans = [
            (self.start, t[0]),
            (t[0] + 1, t[1]),
            (t[1] + 1, t[2]),
            (t[2] + 1, t[3]),
            (t[3] + 1, t[4]),
            (t[4] + 1, t[5]),
            (t[5] + 1, end),
        ]
        .map(|(start, end)| Span {
            // Offsets fit in u32: Index::parse checked the text's length.
            start: start as u32,
            end: end as u32,
        });
        let field = |i: usize| {
            text.get(spans[i].start as usize..spans[i].end as usize)
                .unwrap_or("")
        };
        parse_place(
            [field(0), field(1), field(2), field(3), field(6)],
            spans[1],
            spans[4],
            spans[5],
        )
        .map(Some)
    }
}

/// A place from its id, name, lat, lon and population fields and the spans
/// of its text fields.
fn parse_place(
    [id, name, lat, lon, population]: [&str; 5],
    name_span: Span,
    country: Span,
    admin1: Span,
) -> Result<Place, String> {
    let id: u32 = id
        .parse()
        .map_err(|_| format!("geonameid {id:?} is not a whole number below 2^32"))?;
    if name.trim().is_empty() {
        return Err("empty name".to_owned());
    }
    let lat = coordinate(lat, 90.0, "latitude")?;
    let lon = coordinate(lon, 180.0, "longitude")?;
    let population: u64 = population
        .parse()
        .map_err(|_| format!("population {population:?} is not a whole number"))?;
    Ok(Place {
        lat,
        lon,
        population,
        id,
        name: name_span,
        country,
        admin1,
    })
}

fn coordinate(text: &str, limit: f64, what: &str) -> Result<f64, String> {
    match short_decimal(text).or_else(|| text.parse::<f64>().ok()) {
        Some(value) if value.is_finite() && value.abs() <= limit => Ok(value),
        _ => Err(format!(
            "{what} {text:?} is not a number in -{limit}..={limit}"
        )),
    }
}

/// `[+-]DIGITS[.DIGITS]` with at most 15 digits, as the data has them,
/// about twice as fast as `str::parse` (which the caller falls back to).
/// Exact: the digits and the power of ten are both exact doubles, so one
/// correctly rounded division gives the correctly rounded value.
fn short_decimal(text: &str) -> Option<f64> {
    const POWERS: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (negative, digits) = match text.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        all => (false, all),
    };
    let (mut mantissa, mut count, mut scale, mut dot) = (0u64, 0usize, 0usize, false);
    for &byte in digits {
        match byte {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(byte - b'0');
                count += 1;
                scale += usize::from(dot);
                if count > 15 {
                    return None;
                }
            }
            b'.' if !dot => dot = true,
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    let value = mantissa as f64 / POWERS.get(scale)?;
    Some(if negative { -value } else { value })
}

/// Great-circle distance on the mean-radius sphere.
fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    // Rounding can push `a` just past 1 for antipodal points.
    2.0 * EARTH_RADIUS_M * a.clamp(0.0, 1.0).sqrt().asin()
}

/// The angle `radius_m` spans at the centre; past half the circumference
/// everything is in range.
fn angular_radius(radius_m: f64) -> f64 {
    (radius_m / EARTH_RADIUS_M).min(std::f64::consts::PI)
}

/// How far in latitude, in degrees, a search of `radius_m` reaches, with
/// slack for rounding: no place further than that in latitude alone can be
/// within the radius.
fn reach_deg(radius_m: f64) -> f64 {
    angular_radius(radius_m).to_degrees() + CELL_SLACK_DEG
}

/// Place indices bucketed by cell, stored compactly: cell `c` holds
/// `members[starts[c]..starts[c + 1]]`, in input order.
struct Grid {
    starts: Vec<u32>,
    members: Vec<u32>,
}

impl Grid {
    fn build(places: &[Place]) -> Grid {
        let cell_of = |p: &Place| row_of(p.lat) * COLS + col_of(p.lon);
        let mut starts = vec![0u32; ROWS * COLS + 1];
        for place in places {
            starts[cell_of(place) + 1] += 1;
        }
        for c in 0..ROWS * COLS {
            starts[c + 1] += starts[c];
        }
        let mut next = starts.clone();
        let mut members = vec![0u32; places.len()];
        for (i, place) in places.iter().enumerate() {
            let slot = &mut next[cell_of(place)];
            members[*slot as usize] = i as u32;
            *slot += 1;
        }
        Grid { starts, members }
    }

    fn cell(&self, row: usize, col: usize) -> &[u32] {
        let c = row * COLS + col;
        match (self.starts.get(c), self.starts.get(c + 1)) {
            (Some(&a), Some(&b)) => self.members.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// The row of a latitude; the north pole joins the top row.
fn row_of(lat: f64) -> usize {
    ((lat + 90.0).floor().max(0.0) as usize).min(ROWS - 1)
}

/// The column of a longitude; +180 is -180, so it joins the first column.
fn col_of(lon: f64) -> usize {
    ((lon + 180.0).rem_euclid(360.0).floor() as usize).min(COLS - 1)
}

/// The cells a search must scan: a band of rows, and a run of columns that
/// may wrap across the antimeridian (or all of them).
#[derive(Debug, Clone, Copy, PartialEq)]
struct CellRange {
    rows: (usize, usize),
    /// First column (may be negative before wrapping) and how many.
    cols: (i64, usize),
}

impl CellRange {
    /// None when nothing can match (a non-finite or negative query).
    fn around(query: &Query) -> Option<CellRange> {
        let finite = query.lat.is_finite() && query.lon.is_finite();
        if !finite || query.radius_m.is_nan() || query.radius_m < 0.0 {
            return None;
        }
        let lat = query.lat.clamp(-90.0, 90.0);
        let r = angular_radius(query.radius_m);
        let r_deg = reach_deg(query.radius_m);
        let (south, north) = (lat - r_deg, lat + r_deg);
        let rows = (row_of(south.max(-90.0)), row_of(north.min(90.0)));
        let all = (0, COLS);
        if south <= -90.0 || north >= 90.0 {
            // The circle covers a pole, so every longitude is in reach.
            return Some(CellRange { rows, cols: all });
        }
        // Widest longitude span of a spherical cap of angular radius r.
        let ratio = r.sin() / lat.to_radians().cos();
        if ratio.is_nan() || ratio >= 1.0 {
            return Some(CellRange { rows, cols: all });
        }
        let dlon = ratio.asin().to_degrees() + CELL_SLACK_DEG;
        let first = (query.lon + 180.0 - dlon).floor() as i64;
        let last = (query.lon + 180.0 + dlon).floor() as i64;
        let count = usize::try_from(last - first + 1).unwrap_or(COLS);
        if count >= COLS {
            return Some(CellRange { rows, cols: all });
        }
        Some(CellRange {
            rows,
            cols: (first, count),
        })
    }

    fn iter(self) -> impl Iterator<Item = (usize, usize)> {
        let (first, count) = self.cols;
        (self.rows.0..=self.rows.1).flat_map(move |row| {
            (0..count as i64).map(move |k| (row, (first + k).rem_euclid(COLS as i64) as usize))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use futures::FutureExt;

    use super::*;

    fn ask(places: &Offline, lat: f64, lon: f64, radius_m: f64, bound: usize) -> Value {
        let query = Query {
            lat,
            lon,
            radius_m,
            bound,
        };
        places
            .nearby(query)
            .now_or_never()
            .expect("offline answers are ready at once")
            .expect("offline never fails")
    }

    fn results(answer: &Value) -> &Vec<Value> {
        answer["results"].as_array().unwrap()
    }

    fn names(answer: &Value) -> Vec<&str> {
        results(answer)
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect()
    }

    /// Distance by the spherical law of cosines, independent of haversine_m.
    fn cosine_distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
        let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
        let c = p1.sin() * p2.sin() + p1.cos() * p2.cos() * (lon2 - lon1).to_radians().cos();
        EARTH_RADIUS_M * c.clamp(-1.0, 1.0).acos()
    }

    fn location(result: &Value) -> (f64, f64) {
        let loc = &result["geometry"]["location"];
        (loc["lat"].as_f64().unwrap(), loc["lng"].as_f64().unwrap())
    }

    /// geonameid -> population, read straight from the bundled file.
    fn bundled_population() -> HashMap<String, u64> {
        BUNDLED_TSV
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (format!("geonames:{}", f[0]), f[6].parse().unwrap())
            })
            .collect()
    }

    const UCLA: (f64, f64) = (34.068930, -118.445127);

    #[test]
    fn bundled_data_parses_strictly() {
        let places = Offline::from_tsv(BUNDLED_TSV).unwrap();
        assert!(places.len() > 150_000, "{}", places.len());
        assert_eq!(Offline::bundled().len(), places.len());
    }

    #[test]
    fn ucla_query_finds_real_places_within_the_radius_by_population() {
        let answer = ask(&Offline::bundled(), UCLA.0, UCLA.1, 10_000.0, 20);
        assert_eq!(answer["status"], "OK");
        let attribution = answer["html_attributions"][0].as_str().unwrap();
        assert!(attribution.contains("GeoNames") && attribution.contains("CC BY 4.0"));

        let found = names(&answer);
        assert!(found.len() >= 10, "{found:?}");
        assert!(found.len() <= 20);
        assert!(found.contains(&"Beverly Hills"), "{found:?}");
        assert!(found.contains(&"Santa Monica"), "{found:?}");

        let population = bundled_population();
        let mut last = u64::MAX;
        for result in results(&answer) {
            let (lat, lon) = location(result);
            let d = cosine_distance_m(UCLA.0, UCLA.1, lat, lon);
            assert!(d <= 10_000.0 + 1e-3, "{result} is {d} m away");
            let pop = population[result["place_id"].as_str().unwrap()];
            assert!(pop <= last, "{result} out of population order");
            last = pop;
            assert_eq!(result["types"], json!(["locality", "political"]));
        }
        let beverly = results(&answer)
            .iter()
            .find(|r| r["name"] == "Beverly Hills")
            .unwrap();
        assert_eq!(beverly["place_id"], "geonames:5328041");
        assert_eq!(beverly["vicinity"], "Beverly Hills, CA, US");
    }

    #[test]
    fn bound_is_respected() {
        let places = Offline::bundled();
        let all = ask(&places, UCLA.0, UCLA.1, 10_000.0, 20);
        for bound in [1, 3, 7] {
            let some = ask(&places, UCLA.0, UCLA.1, 10_000.0, bound);
            assert_eq!(results(&some)[..], results(&all)[..bound]);
        }
        // A big radius in a dense region finds far more than the bound.
        let wide = ask(&places, UCLA.0, UCLA.1, 50_000.0, 20);
        assert_eq!(results(&wide).len(), 20);
        assert_eq!(wide["results"][0]["name"], "Los Angeles");
    }

    #[test]
    fn tiny_radius_in_the_ocean_gives_zero_results() {
        let answer = ask(&Offline::bundled(), 0.0, -140.0, 1.0, 20);
        assert_eq!(answer["status"], "ZERO_RESULTS");
        assert_eq!(answer["results"], json!([]));
        assert_eq!(answer["html_attributions"].as_array().unwrap().len(), 1);
    }

    const TINY: &str = "# geonameid\tname\tlat\tlon\tcountrycode\tadmin1code\tpopulation\n\
        10\tBig\t10.0\t20.0\tAA\t01\t5000\n\
        11\tNear Twin\t10.01\t20.0\tAA\tXY\t100\n\
        12\tFar Twin\t10.05\t20.0\tAA\t\t100\n\
        9\tSame Spot Lower Id\t10.05\t20.0\tAA\t\t100\n\
        13\tOutside\t11.0\t20.0\tAA\t\t999999\n\
        \n\
        20\tWest Edge\t0.0\t179.9\tFJ\t\t10\r\n\
        21\tEast Edge\t0.0\t-179.9\tFJ\t\t20\n\
        22\tDate Line\t0.0\t180\tFJ\t\t5\n\
        23\tToo Far East\t0.0\t-179.0\tFJ\t\t1000\n\
        30\tNorth A\t89.9\t0.0\t\t\t1\n\
        31\tNorth B\t89.9\t180.0\t\t\t2\n\
        32\tNorth C\t89.9\t-90.0\t\t\t3\n\
        33\tNot Polar\t89.0\t0.0\t\t\t4\n\
        40\tSouth Pole\t-90\t0\tAQ\t\t0\n";

    #[test]
    fn ranking_is_population_then_distance_then_id() {
        let places = Offline::from_tsv(TINY).unwrap();
        let answer = ask(&places, 10.0, 20.0, 20_000.0, 20);
        assert_eq!(
            names(&answer),
            ["Big", "Near Twin", "Same Spot Lower Id", "Far Twin"]
        );
        // Ids 9 and 12 share population and place: the smaller id wins, so
        // the cut at the bound is deterministic too.
        let cut = ask(&places, 10.0, 20.0, 20_000.0, 3);
        assert_eq!(names(&cut), ["Big", "Near Twin", "Same Spot Lower Id"]);
        assert_eq!(answer["results"][0]["vicinity"], "Big, AA");
        assert_eq!(answer["results"][1]["vicinity"], "Near Twin, XY, AA");
        assert_eq!(answer["results"][0]["place_id"], "geonames:10");
        assert_eq!(
            answer["results"][0]["geometry"],
            json!({"location": {"lat": 10.0, "lng": 20.0}})
        );
    }

    #[test]
    fn a_search_straddling_the_antimeridian_sees_both_sides() {
        let places = Offline::from_tsv(TINY).unwrap();
        // 179.9 and -179.9 are 22 km apart, 11 km either side of 180.
        for (lon, radius_m) in [
            (180.0, 12_000.0),
            (-180.0, 12_000.0),
            (179.9, 23_000.0),
            (-179.9, 23_000.0),
        ] {
            let answer = ask(&places, 0.0, lon, radius_m, 20);
            assert_eq!(
                names(&answer),
                ["East Edge", "West Edge", "Date Line"],
                "from {lon}"
            );
        }
        let answer = ask(&places, 0.0, 179.9, 1_000.0, 20);
        assert_eq!(names(&answer), ["West Edge"]);
    }

    #[test]
    fn a_search_near_a_pole_sees_every_longitude() {
        let places = Offline::from_tsv(TINY).unwrap();
        // The three points at 89.9 are 11.1 km from the pole, on different
        // meridians; the one at 89.0 is 111 km away.
        let answer = ask(&places, 90.0, 0.0, 12_000.0, 20);
        assert_eq!(names(&answer), ["North C", "North B", "North A"]);
        // From one of them, across the pole to the opposite meridian (22 km).
        let answer = ask(&places, 89.9, 0.0, 23_000.0, 20);
        assert_eq!(names(&answer), ["North C", "North B", "North A"]);
        let answer = ask(&places, -89.99, 123.0, 2_000.0, 20);
        assert_eq!(names(&answer), ["South Pole"]);
    }

    #[test]
    fn grid_search_agrees_with_a_full_scan() {
        // Deterministic pseudo-random places and queries, including the
        // poles and the antimeridian, compared with a brute-force answer.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut tsv = String::new();
        for id in 0..3000 {
            let lat = next() * 180.0 - 90.0;
            let lat = if id % 5 == 0 {
                lat.signum() * (85.0 + next() * 5.0)
            } else {
                lat
            };
            let lon = if id % 7 == 0 {
                179.5 + next()
            } else {
                next() * 360.0 - 180.0
            };
            let lon = if lon > 180.0 { lon - 360.0 } else { lon };
            let pop = (next() * 50.0) as u64;
            tsv.push_str(&format!("{id}\tp{id}\t{lat}\t{lon}\tZZ\t\t{pop}\n"));
        }
        let places = Offline::from_tsv(&tsv).unwrap();
        let index = &*places.index;
        for q in 0..600 {
            let query = if q < 300 {
                let lat = if q % 3 == 0 {
                    88.0 + next() * 2.0
                } else {
                    next() * 180.0 - 90.0
                };
                let lat = if q % 2 == 0 { -lat } else { lat };
                let lon = if q % 4 == 0 {
                    179.0 + next() * 2.0
                } else {
                    next() * 360.0 - 180.0
                };
                Query {
                    lat,
                    lon,
                    radius_m: next() * 1_500_000.0,
                    bound: 1 + q % 20,
                }
            } else {
                // Small searches a little way from a place: half of them
                // reach exactly to it (its distance is the radius), the
                // edge of the latitude band and of haversine_m.
                let near = index.places[(next() * index.places.len() as f64) as usize];
                let lat = (near.lat + (next() - 0.5) * 0.02).clamp(-90.0, 90.0);
                let lon = near.lon + (next() - 0.5) * 0.02;
                let radius_m = if q % 2 == 0 {
                    haversine_m(lat, lon, near.lat, near.lon)
                } else {
                    next() * 5_000.0
                };
                Query {
                    lat,
                    lon,
                    radius_m,
                    bound: 20,
                }
            };
            let (lat, lon) = (query.lat, query.lon);
            let mut expected: Vec<Hit> = (0..index.places.len() as u32)
                .filter_map(|i| {
                    let p = index.places[i as usize];
                    let distance_m = haversine_m(lat, lon, p.lat, p.lon);
                    (distance_m <= query.radius_m).then_some(Hit {
                        place: i,
                        population: p.population,
                        id: p.id,
                        distance_m,
                    })
                })
                .collect();
            rank(&mut expected, query.bound);
            let got: Vec<u32> = index.search(&query).iter().map(|h| h.place).collect();
            let want: Vec<u32> = expected.iter().map(|h| h.place).collect();
            assert_eq!(got, want, "{query:?}");
        }
    }

    #[test]
    fn odd_queries_do_not_panic() {
        let places = Offline::from_tsv(TINY).unwrap();
        for (lat, lon, radius_m, bound) in [
            (f64::NAN, 0.0, 1000.0, 5),
            (0.0, f64::INFINITY, 1000.0, 5),
            (0.0, 0.0, f64::NAN, 5),
            (0.0, 0.0, -1.0, 5),
            (10.0, 20.0, 1000.0, 0),
            (91.0, 400.0, 1000.0, 5),
        ] {
            let answer = ask(&places, lat, lon, radius_m, bound);
            assert_eq!(answer["status"], "ZERO_RESULTS", "{lat} {lon} {radius_m}");
        }
        // Half the planet and more: everything, still ranked.
        let answer = ask(&places, 0.0, 0.0, 1e9, 100);
        assert_eq!(results(&answer).len(), 14);
        assert_eq!(answer["results"][0]["name"], "Outside");
        // An empty backend just finds nothing.
        let empty = Offline::from_tsv("").unwrap();
        assert!(empty.is_empty());
        assert_eq!(ask(&empty, 0.0, 0.0, 1e9, 5)["status"], "ZERO_RESULTS");
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        let good = "1\tA\t1.0\t2.0\tAA\t01\t10\n";
        for (bad, what) in [
            ("2\tB\t1.0\t2.0\tAA\t01\n", "fields"),
            ("2\tB\t1.0\t2.0\tAA\t01\t10\textra\n", "fields"),
            ("x\tB\t1.0\t2.0\tAA\t01\t10\n", "geonameid"),
            ("2\t \t1.0\t2.0\tAA\t01\t10\n", "name"),
            ("2\tB\tnorth\t2.0\tAA\t01\t10\n", "latitude"),
            ("2\tB\t90.5\t2.0\tAA\t01\t10\n", "latitude"),
            ("2\tB\t1.0\tNaN\tAA\t01\t10\n", "longitude"),
            ("2\tB\t1.0\t-181\tAA\t01\t10\n", "longitude"),
            ("2\tB\t1.0\t2.0\tAA\t01\t-3\n", "population"),
        ] {
            let text = format!("# header\n{good}\n{bad}{good}");
            let error = Offline::from_tsv(&text).err().unwrap();
            assert!(error.contains("line 4"), "{error}");
            assert!(error.contains(what), "{error}");
        }
    }

    #[test]
    fn short_decimals_read_exactly_as_std_does() {
        for text in [
            "0",
            "-0.0",
            "+1.5",
            "34.06893",
            "-118.445127",
            "1.",
            ".5",
            "89.99999",
        ] {
            assert_eq!(short_decimal(text), text.parse().ok(), "{text}");
        }
        for text in ["", "-", ".", "1.2.3", "1e5", "NaN", "1234567890.1234567"] {
            assert_eq!(short_decimal(text), None, "{text}");
        }
        for line in BUNDLED_TSV.lines().filter(|l| !l.starts_with('#')) {
            for text in line.split('\t').skip(2).take(2) {
                assert_eq!(short_decimal(text), text.parse().ok(), "{text}");
            }
        }
    }

    #[test]
    fn cells_wrap_and_clamp() {
        assert_eq!(row_of(-90.0), 0);
        assert_eq!(row_of(90.0), ROWS - 1);
        assert_eq!(col_of(-180.0), 0);
        assert_eq!(col_of(180.0), 0);
        assert_eq!(col_of(179.999), COLS - 1);
        let query = Query {
            lat: 0.0,
            lon: 179.95,
            radius_m: 15_000.0,
            bound: 1,
        };
        let cells: Vec<_> = CellRange::around(&query).unwrap().iter().collect();
        assert_eq!(cells, [(89, 359), (89, 0), (90, 359), (90, 0)]);
    }
}
