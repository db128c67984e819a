//! The glue: applies a parsed event to MongoDB through the `documents` imports. The
//! documents themselves are built in [`crate::update`]; here are only the calls, in the
//! order that keeps every event idempotent (see `update`'s module docs).

use serde_json::Value;

use crate::event::{Asset, CatalogEvent, Title};
use crate::order::Verdict;
use crate::polyhost::platform::documents as docs;
use crate::polyhost::platform::types::{Error, ErrorKind};
use crate::update::{self, ASSETS_BUCKET, RATINGS, TITLES};

type Step<T> = Result<T, Verdict>;

/// Applies `event` (of id `event_id`) unless it was applied before.
pub fn apply(event_id: &str, event: &CatalogEvent) -> Verdict {
    let done = match event {
        CatalogEvent::Published(title) => publish(title, event_id),
        CatalogEvent::Updated { title_id, changes } => {
            change(title_id, &update::apply_changes(changes))
        }
        CatalogEvent::Related {
            title_id,
            related_title_id,
            relation,
        } => {
            // `$addToSet` on each side: a retry after only the first side was stored adds
            // the second and leaves the first as it is.
            let forward = update::add_relation(related_title_id, *relation);
            let reverse = update::add_relation(title_id, relation.reverse());
            change(title_id, &forward).and_then(|()| change(related_title_id, &reverse))
        }
        CatalogEvent::AssetUploaded(asset) => upload(asset),
        CatalogEvent::Rated {
            title_id,
            user_id,
            stars,
        } => rate(title_id, user_id, *stars, event_id),
    };
    done.err().unwrap_or(Verdict::Ok)
}

/// Inserts the title's document; a title already published by this very event is done.
fn publish(title: &Title, event_id: &str) -> Step<()> {
    let doc = update::title_document(title, event_id);
    match docs::insert(TITLES, &doc.to_string()) {
        Ok(_) => Ok(()),
        Err(e) if e.kind == ErrorKind::Conflict => match find_title(&title.title_id)? {
            Some(stored) if stored["published_by"] == event_id => Ok(()),
            Some(_) => Err(Verdict::Reject(format!(
                "title {} was already published by another event",
                title.title_id
            ))),
            // Removed between the insert and the read: try again.
            None => Err(Verdict::Retry(e.message)),
        },
        Err(e) => Err(host(e)),
    }
}

/// Applies `update` to the title; `retry` when the title is not stored yet (its
/// `published` event may still be on its way).
fn change(title_id: &str, update: &Value) -> Step<()> {
    let filter = update::by_id(title_id).to_string();
    let result = docs::update(TITLES, &filter, &update.to_string(), false, false).map_err(host)?;
    if result.matched == 0 {
        return Err(not_stored(title_id));
    }
    Ok(())
}

/// Stores the asset's bytes under its id, then replaces its reference in the title.
fn upload(asset: &Asset) -> Step<()> {
    let Some(stored) = find_title(&asset.title_id)? else {
        return Err(not_stored(&asset.title_id));
    };
    let metadata = update::blob_metadata(asset).to_string();
    let info = docs::put_blob(
        ASSETS_BUCKET,
        &asset.asset_id,
        &asset.content_type,
        &asset.bytes,
        &metadata,
    )
    .map_err(host)?;
    if info.sha256 != asset.sha256 {
        return Err(Verdict::Retry(format!(
            "the blob {} was stored with the SHA-256 {}, not {}",
            asset.asset_id, info.sha256, asset.sha256
        )));
    }
    let stale = update::stale_asset_entries(&stored, &asset.asset_id);
    if stale == [update::asset_entry(asset)] {
        return Ok(()); // applied before
    }
    if !stale.is_empty() {
        let filter = update::by_id(&asset.title_id).to_string();
        let pull = update::pull_assets(&stale).to_string();
        docs::update(TITLES, &filter, &pull, false, false).map_err(host)?;
    }
    change(&asset.title_id, &update::push_asset(asset))
}

/// Counts a rating once (see `update`'s module docs): skipped when its `ratings` document
/// exists; else the title's summary is written on the condition that it is still the one
/// read, and the `ratings` document is inserted.
fn rate(title_id: &str, user_id: &str, stars: u8, event_id: &str) -> Step<()> {
    let counted = docs::find_one(RATINGS, &update::by_event(event_id).to_string()).map_err(host)?;
    if counted.is_some() {
        return Ok(());
    }
    let Some(stored) = find_title(title_id)? else {
        return Err(not_stored(title_id));
    };
    let (count, sum, last) = update::rating_of(&stored).ok_or_else(|| {
        Verdict::Reject(format!("title {title_id} has a malformed rating summary"))
    })?;
    if last != Some(event_id) {
        let (filter, set) = update::add_rating(title_id, (count, sum), stars, event_id);
        let result = docs::update(TITLES, &filter.to_string(), &set.to_string(), false, false)
            .map_err(host)?;
        if result.matched == 0 {
            return Err(Verdict::Retry(format!(
                "the rating summary of title {title_id} changed while the rating was counted"
            )));
        }
    }
    let rating = update::rating_document(event_id, title_id, user_id, stars).to_string();
    match docs::insert(RATINGS, &rating) {
        Ok(_) => Ok(()),
        Err(e) if e.kind == ErrorKind::Conflict => Ok(()),
        Err(e) => Err(host(e)),
    }
}

fn find_title(title_id: &str) -> Step<Option<Value>> {
    let found = docs::find_one(TITLES, &update::by_id(title_id).to_string()).map_err(host)?;
    found
        .map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| Verdict::Retry(format!("title {title_id} read back as bad JSON: {e}")))
        })
        .transpose()
}

fn not_stored(title_id: &str) -> Verdict {
    Verdict::Retry(format!("title {title_id} is not stored yet"))
}

/// A host error: `retry` when trying again may succeed, else `reject`.
fn host(e: Error) -> Verdict {
    let reason = format!("documents: {:?}: {}", e.kind, e.message);
    if e.transient {
        Verdict::Retry(reason)
    } else {
        Verdict::Reject(reason)
    }
}
