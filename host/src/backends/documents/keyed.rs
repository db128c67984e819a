//! Reading the documents whose field is one of a list of keys: one `$in` query, or one
//! query per key, whichever this server answers faster.
//!
//! MongoDB answers `{field: {"$in": keys}}` from the field's index. FerretDB 1.24 pushes an
//! equality on a field down to PostgreSQL (where an index serves it) but not `$in`: for
//! that it reads the whole collection and filters in its own process, which takes the same
//! time whatever the number of keys and grows with the collection (280 ms for 100 `_id`s
//! in a collection of 460 titles, against 1.3 ms a key read one by one, four at a time).
//! So the host learns, per client and collection, what each way costs ([`KeyedReads`]),
//! and reads the keys the cheaper way ([`Learnt::read`]). Both ways answer the same
//! documents; neither promises an order.
//!
//! A `$in` read taken while reading per key is known is given a time limit: twice what the
//! keys read one by one are expected to cost, at least [`IN_LIMIT_FLOOR`]. Past it (the
//! server's `maxTimeMS`, or the host's own timer a little later) the `$in` read is dropped
//! before it has answered anything, counted as costing at least that, and the keys are read
//! one by one. The collection grows between two `$in` reads, so the estimate of the last
//! one may be far below what the next costs: on FerretDB a `$in` estimated from an early,
//! small `title_assets.files` took 300 ms when taken again later in a paced run, the
//! slowest call of the catalog handler, past which some 40–95 of its events settled late.
//!
//! Used by `find` when its filter is exactly `{"_id": {"$in": […]}}` (see
//! [`id_lookup`]), and by `put-blobs` for the revisions of the blobs it stored (by
//! `filename`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::Error as MongoError;
use mongodb::options::FindOptions;
use serde::de::DeserializeOwned;

use super::bulk::{MAX_POOL_SIZE, id_key};

/// How the documents of a list of keys are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyedRead {
    /// One `find` of `{field: {"$in": keys}}`.
    In,
    /// One `find` of `{field: key}` per key, up to [`MAX_POOL_SIZE`] in flight.
    PerKey,
}

/// How far a read's time tells its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bound {
    /// The read answered in full: what it took is what it costs.
    Exact,
    /// The read failed or was cut off: it costs at least what it took.
    AtLeast,
}

/// For each read of a collection that takes the other way, a way's estimate counts this
/// much less (`0.992`): the way not chosen looks cheaper as it goes unused, and is taken
/// again once it looks cheaper than the one chosen, so that its estimate follows the server
/// too (one slow read, a load spike, would otherwise keep a way out of use for good). How
/// long that takes grows with how much dearer it was found: a `$in` read 30 times dearer
/// than the keys read one by one is taken again after some 430 reads, one as dear after 1.
/// (Taking the other way every so many reads whatever it costs put a 270 ms `$in` in every
/// 64th `put-blobs` of the platform's catalog, the slowest calls of its paced run.)
const FORGET_PER_READ: f64 = 127.0 / 128.0;

/// The least time a `$in` read is given when reading per key is known (see the module
/// docs): a few of FerretDB's reads by key, or one `$in` of a small collection.
const IN_LIMIT_FLOOR: Duration = Duration::from_millis(20);

/// MongoDB's error code for a command stopped by its `maxTimeMS`.
const MAX_TIME_EXPIRED: i32 = 50;

/// What a way of reading cost when last taken.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// Half way between what it cost and the estimate before (for a read per key, per key).
    cost: Duration,
    /// Reads of the collection since this way was last taken.
    unused: u32,
}

impl Estimate {
    /// The cost, counted lower for each read that took the other way.
    fn now(&self) -> Duration {
        let unused = i32::try_from(self.unused).unwrap_or(i32::MAX);
        self.cost.mul_f64(FORGET_PER_READ.powi(unused))
    }
}

/// What reading by keys has cost in one collection: each way is tried once, then the
/// cheaper for the number of keys at hand is taken, every read updating the estimate of
/// the way it took (so a growing collection moves the choice) and lowering the other's
/// ([`FORGET_PER_READ`]).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct KeyedReads {
    /// A `$in` read, whatever the number of keys.
    in_query: Option<Estimate>,
    /// A read per key, per key (in flight together, as they go).
    per_key: Option<Estimate>,
}

impl KeyedReads {
    /// The way to read `keys` keys.
    pub(super) fn choose(&self, keys: usize) -> KeyedRead {
        match (self.in_query, self.per_key) {
            (None, _) => KeyedRead::In,
            (Some(_), None) => KeyedRead::PerKey,
            (Some(q), Some(p)) => {
                let keys = u32::try_from(keys).unwrap_or(u32::MAX);
                if q.now() <= p.now().saturating_mul(keys) {
                    KeyedRead::In
                } else {
                    KeyedRead::PerKey
                }
            }
        }
    }

    /// The time a `$in` read of `keys` keys is given: twice what reading them one by one is
    /// expected to cost, at least [`IN_LIMIT_FLOOR`]; none while that is not known.
    pub(super) fn in_limit(&self, keys: usize) -> Option<Duration> {
        let per_key = self.per_key?;
        let keys = u32::try_from(keys).unwrap_or(u32::MAX);
        Some(
            per_key
                .cost
                .saturating_mul(keys)
                .saturating_mul(2)
                .max(IN_LIMIT_FLOOR),
        )
    }

    /// Takes in a read of `keys` keys made `how` that took `took` (in full, or at least
    /// that): that way's estimate moves half way to it (for a bound, only if that raises
    /// it), the other's counts one more read unused.
    pub(super) fn learn(&mut self, how: KeyedRead, keys: usize, took: Duration, bound: Bound) {
        let (taken, other, seen) = match how {
            KeyedRead::In => (&mut self.in_query, &mut self.per_key, took),
            KeyedRead::PerKey => (
                &mut self.per_key,
                &mut self.in_query,
                took / u32::try_from(keys.max(1)).unwrap_or(u32::MAX),
            ),
        };
        let cost = match (*taken, bound) {
            (None, _) => seen,
            (Some(old), Bound::Exact) => (old.cost + seen) / 2,
            (Some(old), Bound::AtLeast) => old.cost.max((old.cost + seen) / 2),
        };
        *taken = Some(Estimate { cost, unused: 0 });
        if let Some(other) = other {
            other.unused = other.unused.saturating_add(1);
        }
    }
}

/// [`KeyedReads`] per collection, for one client.
#[derive(Debug, Default)]
pub(super) struct Learnt(Mutex<HashMap<String, KeyedReads>>);

impl Learnt {
    /// The way to read `keys` keys of `collection`, and the time limit of a `$in` read.
    fn choose(&self, collection: &str, keys: usize) -> (KeyedRead, Option<Duration>) {
        let reads = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(collection)
            .copied()
            .unwrap_or_default();
        (reads.choose(keys), reads.in_limit(keys))
    }

    /// A read of `keys` keys of `collection` made `how`, under way from now.
    fn reading(&self, collection: &str, how: KeyedRead, keys: usize) -> Reading<'_> {
        Reading {
            learnt: self,
            collection: collection.to_string(),
            how,
            keys,
            started: std::time::Instant::now(),
            finished: false,
        }
    }

    /// The documents of `coll` whose `field` is one of `keys`, read the way that looks
    /// cheaper (a `$in` within its time limit, else one read per key; see the module docs),
    /// each with `options` (a projection, `maxTimeMS`; no sort, skip or limit, which a read
    /// per key cannot honour); and the read under way, which takes in what it cost when it
    /// is [`Reading::finish`]ed or dropped. Each matching document comes once, provided no
    /// two keys match the same value (see [`id_lookup`]).
    pub(super) async fn read<T>(
        &self,
        coll: &mongodb::Collection<T>,
        field: &str,
        keys: Vec<Bson>,
        options: FindOptions,
    ) -> (BoxStream<'static, Result<T, MongoError>>, Reading<'_>)
    where
        T: DeserializeOwned + Unpin + Send + Sync + 'static,
    {
        let collection = coll.name();
        let n = keys.len();
        let (how, limit) = self.choose(collection, n);
        if how == KeyedRead::PerKey {
            return (
                one_by_one(coll, field, keys, options),
                self.reading(collection, how, n),
            );
        }
        let in_query = |keys: Vec<Bson>, options| {
            coll.find(doc! { field: { "$in": keys } })
                .with_options(options)
        };
        let reading = self.reading(collection, KeyedRead::In, n);
        let Some(limit) = limit else {
            return (opened(in_query(keys, options).await), reading);
        };
        let mut bounded = options.clone();
        bounded.max_time = Some(options.max_time.map_or(limit, |max| max.min(limit)));
        // The server's `maxTimeMS` stops it first; the host's timer a little later, should
        // the server not honour it.
        match tokio::time::timeout(limit + IN_LIMIT_FLOOR, in_query(keys.clone(), bounded)).await {
            Ok(Err(e)) if expired(&e) => {}
            Ok(cursor) => return (opened(cursor), reading),
            Err(_) => {}
        }
        // Dropped unfinished, the `$in` read counts as costing at least what it took.
        drop(reading);
        tracing::debug!(
            collection,
            keys = n,
            limit_ms = limit.as_millis() as u64,
            "a $in read outlasted its limit: the keys are read one by one"
        );
        (
            one_by_one(coll, field, keys, options),
            self.reading(collection, KeyedRead::PerKey, n),
        )
    }

    /// Takes in a read of `keys` keys of `collection` (see [`KeyedReads::learn`]).
    pub(super) fn learn(
        &self,
        collection: &str,
        how: KeyedRead,
        keys: usize,
        took: Duration,
        bound: Bound,
    ) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(collection.to_string())
            .or_default()
            .learn(how, keys, took, bound);
    }
}

/// A read by keys under way. [`Reading::finish`]ed, it takes in what the read took. Dropped
/// unfinished (the read failed, or was cut off with its call by the host-call timeout), it
/// takes in the time so far as a bound: the estimate of that way may rise, never fall (a
/// read that failed at once, or stopped at a result limit, says little of what a whole one
/// costs). A read cut off must count: a `$in` that outlasts the call's time limit (a large
/// collection on FerretDB) would otherwise be learnt never, and taken again for every read,
/// each one cut off in turn.
pub(super) struct Reading<'a> {
    learnt: &'a Learnt,
    collection: String,
    how: KeyedRead,
    keys: usize,
    started: std::time::Instant,
    finished: bool,
}

impl Reading<'_> {
    /// The read answered in full: what it took is taken in.
    pub(super) fn finish(mut self) -> Duration {
        self.finished = true;
        let took = self.started.elapsed();
        self.learnt
            .learn(&self.collection, self.how, self.keys, took, Bound::Exact);
        took
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let took = self.started.elapsed();
            self.learnt
                .learn(&self.collection, self.how, self.keys, took, Bound::AtLeast);
        }
    }
}

/// Whether a command was stopped by its `maxTimeMS`.
fn expired(error: &MongoError) -> bool {
    matches!(&*error.kind, mongodb::error::ErrorKind::Command(c) if c.code == MAX_TIME_EXPIRED)
}

/// A `$in` read's cursor, or its error, as the stream of its documents.
fn opened<T>(
    cursor: Result<mongodb::Cursor<T>, MongoError>,
) -> BoxStream<'static, Result<T, MongoError>>
where
    T: DeserializeOwned + Unpin + Send + Sync + 'static,
{
    match cursor {
        Ok(cursor) => cursor.boxed(),
        Err(e) => futures::stream::once(async { Err(e) }).boxed(),
    }
}

/// The documents of `coll` whose `field` is one of `keys`, one `find` per key, up to
/// [`MAX_POOL_SIZE`] in flight (see [`Learnt::read`]).
fn one_by_one<T>(
    coll: &mongodb::Collection<T>,
    field: &str,
    keys: Vec<Bson>,
    options: FindOptions,
) -> BoxStream<'static, Result<T, MongoError>>
where
    T: DeserializeOwned + Unpin + Send + Sync + 'static,
{
    let coll = coll.clone();
    let field = field.to_string();
    futures::stream::iter(keys)
        .map(move |key| {
            // Owned handles: the futures go to `Send` host-call futures, where borrowed
            // closure arguments do not type-check.
            let (coll, options, filter) = (coll.clone(), options.clone(), doc! { &field: key });
            async move {
                coll.find(filter)
                    .with_options(options)
                    .await?
                    .try_collect::<Vec<T>>()
                    .await
            }
        })
        .buffered(MAX_POOL_SIZE as usize)
        .map_ok(|found| futures::stream::iter(found.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
}

/// The `_id`s of a `find` that only looks documents up by id — a filter of exactly
/// `{"_id": {"$in": [ids]}}`, with no sort, skip or limit — listed once each (by the
/// server's comparison: `1` and `1L` are one id). Only ids that match by equality alone
/// qualify: strings, integers and ObjectIds (a regex in `$in` is a pattern, a document or
/// array compares field by field, a double may be NaN).
pub(super) fn id_lookup(filter: &Document, options: &FindOptions) -> Option<Vec<Bson>> {
    if options.sort.is_some()
        || options.skip.is_some_and(|s| s > 0)
        || options.limit.is_some()
        || filter.len() != 1
    {
        return None;
    }
    let condition = filter.get_document("_id").ok()?;
    if condition.len() != 1 {
        return None;
    }
    let ids = condition.get_array("$in").ok()?;
    if ids.is_empty() {
        return None;
    }
    let mut seen = HashSet::new();
    let mut unique = Vec::with_capacity(ids.len());
    for id in ids {
        match id {
            Bson::String(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::ObjectId(_) => {}
            _ => return None,
        }
        if seen.insert(id_key(id)) {
            unique.push(id.clone());
        }
    }
    Some(unique)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn keyed_reads_try_each_way_then_take_the_cheaper_for_the_keys_at_hand() {
        let mut reads = KeyedReads::default();
        assert_eq!(reads.choose(200), KeyedRead::In, "first, one $in");
        reads.learn(KeyedRead::In, 200, ms(60), Bound::Exact);
        assert_eq!(reads.choose(200), KeyedRead::PerKey, "then one per key");
        reads.learn(KeyedRead::PerKey, 200, ms(100), Bound::Exact); // 0.5 ms per key
        // A $in read costs 60 ms whatever the keys; per key, 0.5 ms each.
        assert_eq!(reads.choose(200), KeyedRead::In);
        assert_eq!(reads.choose(100), KeyedRead::PerKey);
        assert_eq!(reads.choose(3), KeyedRead::PerKey);
        // The collection grows: $in reads slow down, and the choice moves.
        for _ in 0..4 {
            reads.learn(KeyedRead::In, 200, ms(400), Bound::Exact);
        }
        assert_eq!(reads.choose(200), KeyedRead::PerKey);
        assert_eq!(reads.choose(1_000), KeyedRead::In);
    }

    /// FerretDB's costs: a `$in` read of the collection 300 ms, ten keys read one by one 10 ms.
    fn ferret(how: KeyedRead) -> Duration {
        match how {
            KeyedRead::In => ms(300),
            KeyedRead::PerKey => ms(10),
        }
    }

    /// Reads `n` times `keys` keys, each way costing what `cost` says: the ways taken.
    fn run(
        reads: &mut KeyedReads,
        n: usize,
        keys: usize,
        cost: impl Fn(KeyedRead) -> Duration,
    ) -> Vec<KeyedRead> {
        (0..n)
            .map(|_| {
                let how = reads.choose(keys);
                reads.learn(how, keys, cost(how), Bound::Exact);
                how
            })
            .collect()
    }

    #[test]
    fn a_dearer_way_is_taken_again_after_reads_in_proportion_to_how_much_dearer() {
        let mut reads = KeyedReads::default();
        let taken = run(&mut reads, 2_000, 10, ferret);
        let ins: Vec<usize> = (0..taken.len())
            .filter(|&i| taken[i] == KeyedRead::In)
            .collect();
        // The first read (nothing known yet), then once every 400-odd reads.
        assert_eq!(ins[0], 0);
        assert!(ins.len() <= 5, "{ins:?}");
        assert!(ins.windows(2).all(|w| w[1] - w[0] > 400), "{ins:?}");
        // Two ways that cost about the same are both kept in use.
        let even = |how| match how {
            KeyedRead::In => ms(10),
            KeyedRead::PerKey => ms(11),
        };
        let mut reads = KeyedReads::default();
        let taken = run(&mut reads, 100, 10, even);
        assert!(taken.iter().filter(|&&h| h == KeyedRead::PerKey).count() >= 1);
        assert!(taken.iter().filter(|&&h| h == KeyedRead::In).count() >= 50);
    }

    #[test]
    fn a_spike_that_made_a_way_look_dear_is_forgotten() {
        let mut reads = KeyedReads::default();
        run(&mut reads, 10, 10, ferret);
        // One read per key took a whole second (a load spike): $in looks cheaper now.
        reads.learn(KeyedRead::PerKey, 10, ms(1_000), Bound::Exact);
        assert_eq!(reads.choose(10), KeyedRead::In);
        let taken = run(&mut reads, 300, 10, ferret);
        let back = taken
            .iter()
            .position(|&h| h == KeyedRead::PerKey)
            .expect("reads per key are taken again");
        assert!(back < 100, "after {back} reads");
        assert!(taken[back..].iter().all(|&h| h == KeyedRead::PerKey));
    }

    #[test]
    fn a_in_read_is_limited_to_twice_the_keys_read_one_by_one_once_that_is_known() {
        let mut reads = KeyedReads::default();
        assert_eq!(reads.in_limit(10), None, "nothing known");
        reads.learn(KeyedRead::In, 10, ms(5), Bound::Exact);
        assert_eq!(reads.in_limit(10), None, "reads per key not known");
        reads.learn(KeyedRead::PerKey, 40, ms(80), Bound::Exact); // 2 ms per key
        assert_eq!(reads.choose(40), KeyedRead::In);
        assert_eq!(reads.in_limit(40), Some(ms(160)));
        assert_eq!(
            reads.in_limit(2),
            Some(IN_LIMIT_FLOOR),
            "at least the floor"
        );
        // A $in dropped at its limit counts as costing at least that: its estimate rises
        // half way to it.
        reads.learn(KeyedRead::In, 40, ms(160), Bound::AtLeast);
        assert_eq!(reads.in_query.map(|e| e.cost), Some((ms(5) + ms(160)) / 2));
    }

    #[test]
    fn a_read_that_failed_or_was_cut_off_only_raises_its_estimate() {
        let mut reads = KeyedReads::default();
        // Cut off at 500 ms before anything was known: $in costs at least that.
        reads.learn(KeyedRead::In, 10, ms(500), Bound::AtLeast);
        assert_eq!(
            reads.choose(10),
            KeyedRead::PerKey,
            "$in is not taken again"
        );
        reads.learn(KeyedRead::PerKey, 10, ms(10), Bound::Exact);
        // A read per key that failed at once says nothing cheaper...
        reads.learn(KeyedRead::PerKey, 10, ms(0), Bound::AtLeast);
        assert_eq!(reads.per_key.map(|e| e.cost), Some(ms(1)));
        // ...but one cut off late says dearer.
        reads.learn(KeyedRead::PerKey, 10, ms(2_000), Bound::AtLeast);
        assert_eq!(reads.choose(10), KeyedRead::In);
    }

    #[test]
    fn learnt_is_kept_per_collection() {
        let learnt = Learnt::default();
        learnt.learn("titles", KeyedRead::In, 10, ms(300), Bound::Exact);
        assert_eq!(learnt.choose("titles", 10), (KeyedRead::PerKey, None));
        assert_eq!(learnt.choose("ratings", 10), (KeyedRead::In, None));
    }

    #[test]
    fn only_a_plain_list_of_ids_is_a_lookup() {
        let plain = FindOptions::default();
        let oid = ObjectId::new();
        assert_eq!(
            id_lookup(&doc! {"_id": {"$in": ["a", 1, 1_i64, "a", oid, 2]}}, &plain),
            Some(vec![
                "a".into(),
                Bson::Int32(1),
                Bson::ObjectId(oid),
                Bson::Int32(2)
            ]),
            "listed once each, 1 and 1L as one"
        );
        let projected = FindOptions::builder().projection(doc! {"n": 1}).build();
        assert!(id_lookup(&doc! {"_id": {"$in": ["a"]}}, &projected).is_some());
        for filter in [
            doc! {"_id": {"$in": []}},
            doc! {"_id": "a"},
            doc! {"_id": {"$in": ["a"]}, "n": 1},
            doc! {"_id": {"$in": ["a"], "$ne": "b"}},
            doc! {"_id": {"$nin": ["a"]}},
            doc! {"n": {"$in": ["a"]}},
            doc! {"_id": {"$in": [{"$regex": "^a"}]}},
            doc! {"_id": {"$in": [mongodb::bson::Regex { pattern: "^a".into(), options: String::new() }]}},
            doc! {"_id": {"$in": [1.5]}},
            doc! {"_id": {"$in": [["a"]]}},
        ] {
            assert_eq!(id_lookup(&filter, &plain), None, "{filter}");
        }
        for options in [
            FindOptions::builder().sort(doc! {"_id": 1}).build(),
            FindOptions::builder().skip(1).build(),
            FindOptions::builder().limit(1).build(),
        ] {
            assert_eq!(id_lookup(&doc! {"_id": {"$in": ["a"]}}, &options), None);
        }
    }
}
