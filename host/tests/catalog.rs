//! The catalog-handler, loaded in-process with `instance = "reused"` (as the platform runs
//! it) against a database of its own: what the instance keeps between batches (the titles
//! it read and wrote) is never trusted over the store. A title changed by another writer
//! since is read again before the handler writes it, a replay on a fresh instance finds the
//! titles already there, and a batch of kept titles reads nothing.
//!
//! Needs MongoDB (FerretDB here, `cargo xtask services up`) and the plugin (`cargo xtask
//! plugins -p catalog-handler`).

mod common;
mod harness;

use std::sync::Arc;

use anyhow::{Context as _, Result, ensure};
use common::{Service, unique_name, with_cleanup, within};
use mongodb::bson::{Document, doc};
use polyhost::backends::documents;
use polyhost::bindings::partitions::exports::polyhost::platform::partitions_handler::PartitionEvents;
use polyhost::bindings::polyhost::platform::types::{BatchInfo, Event, Outcome};
use polyhost::manifest::{ConfigValue, InstanceMode, PluginSpec};
use polyhost::runtime::{LoadedPlugin, Records, Runtime};
use serde_json::{Value, json};

/// The tests count documents calls on the process's one metrics registry: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A test's database and the catalog-handler granted it.
struct Fixture {
    mongodb: Service,
    db: mongodb::Database,
    runtime: Runtime,
    spec: PluginSpec,
    plugin: Arc<LoadedPlugin>,
}

impl Fixture {
    /// Hands `events` to the plugin as a batch of partition 0, attempt `attempt`.
    async fn handle(&self, events: &[Event], attempt: u32) -> Result<Vec<Outcome>> {
        let info = BatchInfo {
            topic: "streaming.catalog".into(),
            partition: 0,
            attempt,
        };
        self.plugin
            .handle(&info, events, Records::default())
            .await
            .map_err(|e| anyhow::anyhow!("the batch failed: {e}"))
    }

    /// Hands the plugin one call of several partitions: `(topic, partition, events)`, each
    /// on a first attempt. One list of outcomes per partition.
    async fn handle_call(&self, parts: &[(&str, i32, &[Event])]) -> Result<Vec<Vec<Outcome>>> {
        let parts = parts
            .iter()
            .map(|(topic, partition, events)| PartitionEvents {
                batch: BatchInfo {
                    topic: topic.to_string(),
                    partition: *partition,
                    attempt: 0,
                },
                events: events.to_vec(),
            })
            .collect();
        let permit = self.plugin.instance().await;
        self.plugin
            .handle_partitions_holding(permit, parts, Records::default())
            .await
            .map_err(|e| anyhow::anyhow!("the call failed: {e}"))
    }

    /// The title `id` as stored.
    async fn title(&self, id: &str) -> Result<Document> {
        within(
            &self.mongodb,
            "reading a title",
            self.db
                .collection::<Document>("titles")
                .find_one(doc! {"_id": id}),
        )
        .await?
        .with_context(|| format!("title {id} is not stored"))
    }

    /// A fresh instance of the same plugin (a restart of the host).
    async fn reload(&mut self) -> Result<()> {
        self.plugin = self
            .runtime
            .load(&self.spec)
            .await
            .map_err(|e| anyhow::anyhow!("loading the catalog-handler: {e}"))?;
        Ok(())
    }
}

async fn with_fixture(body: impl AsyncFnOnce(&mut Fixture) -> Result<()>) -> Result<()> {
    let mongodb = Service::mongodb();
    let client = common::mongodb().await?;
    let db = client.database(&unique_name("catalog"));
    let runtime = harness::runtime();
    let mut spec = PluginSpec::new(
        "catalog-handler",
        harness::platform_plugin("catalog-handler"),
    );
    spec.subscribe = vec!["streaming.catalog".into()];
    spec.grants.documents = Some(documents::Grant {
        database: db.name().to_string(),
        collections: vec!["titles".into(), "ratings".into()],
        buckets: vec!["title_assets".into()],
    });
    spec.limits.instance = InstanceMode::Reused;
    spec.limits.max_instances = 1;
    spec.limits.host_call_timeout_ms = 10_000;
    spec.limits.call_timeout_ms = 60_000;
    // The batch's time budget (2 s by default) is not under test here: a first write into a
    // fresh database (FerretDB creating its collections) took longer on a loaded machine,
    // and the rest of the batch was handed back.
    spec.config
        .insert("batch_budget_ms".into(), ConfigValue::Integer(30_000));
    let plugin = runtime
        .load(&spec)
        .await
        .map_err(|e| anyhow::anyhow!("{mongodb}: loading the catalog-handler: {e}"))?;
    let mut fixture = Fixture {
        mongodb,
        db,
        runtime,
        spec,
        plugin,
    };
    with_cleanup(&mut fixture, body, async |f| {
        within(&f.mongodb, "dropping the test database", f.db.drop()).await
    })
    .await
}

fn ev(offset: i64, id: &str, ty: &str, data: Value) -> Event {
    let mut e = harness::event(id, ty, &data);
    e.subject = data["title_id"].as_str().map(str::to_string);
    e.offset = offset;
    e
}

fn published(offset: i64, id: &str, title: &str) -> Event {
    ev(
        offset,
        id,
        "streaming.title.published",
        json!({"title_id": title, "kind": "movie", "name": "One", "genres": ["drama"],
               "year": 2001, "maturity_rating": "12", "cast": ["A"], "duration_min": 90}),
    )
}

fn renamed(offset: i64, id: &str, title: &str, name: &str) -> Event {
    ev(
        offset,
        id,
        "streaming.title.updated",
        json!({"title_id": title, "changes": {"name": name}}),
    )
}

fn rated(offset: i64, id: &str, title: &str, stars: u8) -> Event {
    ev(
        offset,
        id,
        "streaming.rating.submitted",
        json!({"title_id": title, "user_id": "u-1", "stars": stars}),
    )
}

/// `polyhost_backend_calls_total{backend="documents",plugin="catalog-handler"}` so far.
fn documents_calls() -> f64 {
    polyhost::metrics::global()
        .encode()
        .lines()
        .filter(|l| {
            l.starts_with("polyhost_backend_calls_total{")
                && l.contains("backend=\"documents\"")
                && l.contains("plugin=\"catalog-handler\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The integer `key` of `doc`, stored as 32 or 64 bits.
fn int(doc: &Document, key: &str) -> Result<i64> {
    Ok(doc
        .get_i32(key)
        .map(i64::from)
        .or_else(|_| doc.get_i64(key))?)
}

fn all_ok(outcomes: &[Outcome]) -> bool {
    outcomes.iter().all(|o| matches!(o, Outcome::Ok))
}

#[tokio::test]
async fn a_title_changed_by_another_writer_is_read_again_before_it_is_written() -> Result<()> {
    let _serial = SERIAL.lock().await;
    with_fixture(async |f| {
        let first = f
            .handle(&[published(0, "e0", "t-1"), rated(1, "e1", "t-1", 4)], 0)
            .await?;
        ensure!(all_ok(&first), "first batch: {first:?}");

        // Another writer (a second host, a version being swapped out) counts a rating the
        // kept instance does not know of, bumping `rev` as every writer of titles does.
        let titles = f.db.collection::<Document>("titles");
        let changed = within(
            &f.mongodb,
            "changing the title",
            titles.update_one(
                doc! {"_id": "t-1"},
                doc! {"$set": {"rating.count": 2, "rating.sum": 9, "rating.average": 4.5},
                "$inc": {"rev": 1}},
            ),
        )
        .await?;
        ensure!(changed.modified_count == 1, "the other writer's update");

        // The instance's memory of t-1 is stale: its write matches nothing and the batch
        // is handed back; the retry reads the title again and counts on top of it.
        let batch = [rated(2, "e2", "t-1", 1), renamed(3, "e3", "t-1", "Two")];
        let outcomes = f.handle(&batch, 0).await?;
        ensure!(
            outcomes.iter().all(|o| matches!(o, Outcome::Retry(_))),
            "a write from a stale title must be handed back, got {outcomes:?}"
        );
        let untouched = f.title("t-1").await?;
        ensure!(
            untouched.get_str("name")? == "One",
            "nothing of the stale write landed: {untouched}"
        );
        let outcomes = f.handle(&batch, 1).await?;
        ensure!(all_ok(&outcomes), "the retry: {outcomes:?}");
        let title = f.title("t-1").await?;
        let rating = title.get_document("rating")?;
        ensure!(
            rating
                .get_i32("count")
                .map(i64::from)
                .or(rating.get_i64("count"))?
                == 3
                && rating
                    .get_i32("sum")
                    .map(i64::from)
                    .or(rating.get_i64("sum"))?
                    == 10,
            "the other writer's rating and the handler's are both counted: {rating}"
        );
        ensure!(title.get_str("name")? == "Two", "{title}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn kept_titles_are_not_read_again_and_a_fresh_instance_finds_them_stored() -> Result<()> {
    let _serial = SERIAL.lock().await;
    with_fixture(async |f| {
        let batch = [
            published(0, "e0", "t-1"),
            published(1, "e1", "t-2"),
            rated(2, "e2", "t-1", 5),
        ];
        let before = documents_calls();
        let outcomes = f.handle(&batch, 0).await?;
        ensure!(all_ok(&outcomes), "first batch: {outcomes:?}");
        let first_calls = documents_calls() - before;
        ensure!(
            first_calls == 2.0,
            "titles published in the batch are not read: one write of the titles, one of \
             the ratings; made {first_calls} documents calls"
        );

        // The same instance, titles it wrote: no read, one write per collection.
        let before = documents_calls();
        let outcomes = f
            .handle(
                &[renamed(3, "e3", "t-1", "Two"), rated(4, "e4", "t-2", 3)],
                0,
            )
            .await?;
        ensure!(all_ok(&outcomes), "second batch: {outcomes:?}");
        let second_calls = documents_calls() - before;
        ensure!(
            second_calls == 2.0,
            "kept titles are not read again; made {second_calls} documents calls"
        );

        // A restart replays the first batch on a fresh instance: the titles are there, so
        // the inserts fail on their ids and the batch is handed back; the retry reads them
        // and finds everything applied.
        f.reload().await?;
        let outcomes = f.handle(&batch, 0).await?;
        ensure!(
            outcomes.iter().all(|o| matches!(o, Outcome::Retry(_))),
            "the replayed publishes meet their own titles: {outcomes:?}"
        );
        let outcomes = f.handle(&batch, 1).await?;
        ensure!(all_ok(&outcomes), "the replay's retry: {outcomes:?}");
        let t1 = f.title("t-1").await?;
        ensure!(
            t1.get_str("name")? == "Two",
            "the replay did not undo the rename: {t1}"
        );
        let rating = t1.get_document("rating")?;
        ensure!(
            int(rating, "count")? == 1,
            "the rating is counted once: {rating}"
        );
        let ratings = within(
            &f.mongodb,
            "counting ratings",
            f.db.collection::<Document>("ratings")
                .count_documents(doc! {}),
        )
        .await?;
        ensure!(ratings == 2, "two ratings documents, found {ratings}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_call_of_both_topics_applies_publications_first_and_keeps_order_per_partition()
-> Result<()> {
    let _serial = SERIAL.lock().await;
    with_fixture(async |f| {
        ensure!(
            f.plugin.takes_partitions(),
            "the catalog-handler exports the partitions form"
        );
        // One call, the ratings partition first. The ratings are applied after the
        // publications all the same, so they find their titles. t-7's relation names a
        // title not stored: it is retried, and holds back t-7's later event of its own
        // partition, but not t-7's rating from the other topic.
        let ratings = [rated(40, "r40", "t-7", 4), rated(41, "r41", "t-8", 2)];
        let related = ev(
            12,
            "p12",
            "streaming.title.related",
            json!({"title_id": "t-7", "related_title_id": "t-404", "relation": "sequel"}),
        );
        let catalog = [
            published(10, "p10", "t-7"),
            published(11, "p11", "t-8"),
            related,
            renamed(13, "p13", "t-7", "Seven"),
        ];
        let before = documents_calls();
        let lists = f
            .handle_call(&[
                ("streaming.ratings", 3, &ratings),
                ("streaming.catalog", 1, &catalog),
            ])
            .await?;
        let calls = documents_calls() - before;
        ensure!(lists.len() == 2, "one list per partition: {lists:?}");
        ensure!(
            all_ok(&lists[0]),
            "the ratings find the titles published in the same call: {:?}",
            lists[0]
        );
        let catalog_outcomes = &lists[1];
        ensure!(
            matches!(
                catalog_outcomes.as_slice(),
                [
                    Outcome::Ok,
                    Outcome::Ok,
                    Outcome::Retry(_),
                    Outcome::Retry(_)
                ]
            ),
            "both publications apply; the relation to a title not stored is retried, and the \
             rename after it in its partition with it: {catalog_outcomes:?}"
        );
        ensure!(
            calls == 3.0,
            "a call costs what one batch does, not a batch per partition: a read of t-404 \
             (not met yet), one write of the titles, one of the ratings; made {calls} \
             documents calls"
        );

        // Both partitions again, as after a restart: nothing counts twice.
        let lists = f
            .handle_call(&[
                ("streaming.catalog", 1, &catalog[..2]),
                ("streaming.ratings", 3, &ratings),
            ])
            .await?;
        ensure!(
            lists.iter().all(|l| all_ok(l)),
            "the replay is applied already: {lists:?}"
        );
        for (title, stars) in [("t-7", 4), ("t-8", 2)] {
            let doc = f.title(title).await?;
            let rating = doc.get_document("rating")?;
            ensure!(
                int(rating, "count")? == 1 && int(rating, "sum")? == stars,
                "{title}: its rating counted once: {rating}"
            );
            ensure!(
                int(rating, "last_partition")? == 3,
                "{title}: the summary names the ratings partition: {rating}"
            );
        }
        let t7 = f.title("t-7").await?;
        ensure!(
            t7.get_str("name")? == "One",
            "the held-back rename is not applied: {t7}"
        );
        Ok(())
    })
    .await
}
