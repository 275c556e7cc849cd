//! The HTTPS lane of a stage: small files go by HTTPS to or from a collection that serves
//! it, the rest by Transfer.

use std::path::PathBuf;

use super::{PlannedItem, check_plan, item_spec, local_path};
use crate::config::Config;
use crate::error::Result;
use crate::transfer::{BatchOptions, Enqueued, TransferManager};

/// [`enqueue`], with the HTTPS lane for files of at most `max_size` bytes: a file at this
/// site goes by PUT to a destination collection that serves HTTPS, a file for this site
/// (a stage-in) by ranged GET from a source collection that does (its size asked by
/// HEAD first); either falls back to Transfer, once, if its request fails. Directories,
/// files of unknown size and collections without HTTPS go by Transfer. Credentials
/// missing for a collection's HTTPS are a typed
/// [`ConsentRequired`](crate::error::ConsentRequired), before anything is enqueued.
pub async fn enqueue_with_lane(
    manager: &TransferManager,
    items: &[PlannedItem],
    options: &BatchOptions,
    lane: &crate::transfer::HttpsLane,
    max_size: u64,
    (config, current): (&Config, Option<&str>),
) -> Result<Vec<Enqueued>> {
    check_plan(items)?;
    let mut routes = Vec::with_capacity(items.len());
    for item in items {
        routes.push(lane_route(item, lane, max_size, config, current).await?);
    }
    let specs = items
        .iter()
        .zip(&routes)
        .map(|(item, route)| {
            let spec = item_spec(item, options);
            if route.is_some() {
                spec.via_https()
            } else {
                spec
            }
        })
        .collect();
    let handles = manager.enqueue_once(specs).await?;
    for ((item, route), handle) in items.iter().zip(routes).zip(&handles) {
        // An item an earlier command queued is that command's to send.
        let (Some(route), false) = (route, handle.earlier) else {
            continue;
        };
        match route {
            LaneRoute::Put(https, local) => lane.send(
                handle.item,
                https,
                item.destination_path(),
                crate::transfer::LaneBody::File(local),
            ),
            LaneRoute::Get(https, local, size) => {
                lane.fetch(handle.item, https, item.source.path.clone(), local, size)
            }
        }
    }
    Ok(handles)
}

/// How a planned item goes by the HTTPS lane.
enum LaneRoute {
    /// PUT this local file to the destination's HTTPS.
    Put(std::sync::Arc<crate::transfer::CollectionHttps>, PathBuf),
    /// GET from the source's HTTPS into this local file, of this size.
    Get(
        std::sync::Arc<crate::transfer::CollectionHttps>,
        PathBuf,
        u64,
    ),
}

/// The lane route of `item`, if it takes one (see [`enqueue_with_lane`]).
async fn lane_route(
    item: &PlannedItem,
    lane: &crate::transfer::HttpsLane,
    max_size: u64,
    config: &Config,
    current: Option<&str>,
) -> Result<Option<LaneRoute>> {
    if max_size == 0 || item.recursive == Some(true) {
        return Ok(None);
    }
    if let (Some(size), Some(local)) = (item.size, local_path(&item.source, config, current))
        && size <= max_size
    {
        return Ok(lane
            .route(&item.destination.collection)
            .await?
            .map(|https| LaneRoute::Put(https, local)));
    }
    let Some(local) = local_path(&item.destination_location(), config, current) else {
        return Ok(None);
    };
    let Some(https) = lane.route(&item.source.collection).await? else {
        return Ok(None);
    };
    Ok(match https.size(&item.source.path).await {
        Ok(Some(size)) if size <= max_size => Some(LaneRoute::Get(https, local, size)),
        // Too large, not a file there (Transfer says why), or HEAD failed: Transfer.
        _ => None,
    })
}
