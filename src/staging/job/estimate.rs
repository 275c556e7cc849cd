//! Will the stage-in be there when the job starts? At submission: the bytes to move
//! (sizes known here, or asked of Globus), the rate this identity's recent tasks between
//! the same collections achieved, and Slurm's expected start (`squeue --start`).

use chrono::{DateTime, Local, NaiveDateTime, TimeZone};

use crate::scheduler::{JobId, Slurm, StagedFile};
use crate::transfer::{TaskQuery, TransferManager};

use super::PlannedItem;

/// How many recent tasks the measured rate is taken from.
const RECENT_TASKS: u32 = 50;

/// At most this many Globus requests for sizes at submission (beyond, sizes stay
/// unknown: Globus's checksum verification still vouches for the copies).
const MAX_SIZE_REQUESTS: usize = 16;

/// Fills in the sizes of stage-in files whose source is not here, from Globus: one
/// listing (`ls`) per source directory, a few at a time, at most [`MAX_SIZE_REQUESTS`]
/// (a thousand files in one directory are one request). A source Globus does not list
/// now stays unknown: the transfer says why.
pub(super) async fn remote_sizes(
    manager: &TransferManager,
    items: &[PlannedItem],
    files: &mut [StagedFile],
) {
    // (collection, directory) -> the files (by position) whose sources are in it.
    let mut directories: Vec<((String, String), Vec<usize>)> = Vec::new();
    for (n, item) in items.iter().enumerate() {
        if files[n].size.is_some() {
            continue;
        }
        let Some((directory, _)) = item.source.path.rsplit_once('/') else {
            continue;
        };
        let directory = if directory.is_empty() { "/" } else { directory };
        let at = (item.source.collection.to_string(), directory.to_owned());
        match directories.iter_mut().find(|(d, _)| *d == at) {
            Some((_, wanted)) => wanted.push(n),
            None => directories.push((at, vec![n])),
        }
    }
    directories.truncate(MAX_SIZE_REQUESTS);
    let client = manager.client();
    for chunk in directories.chunks(8) {
        let listing = chunk
            .iter()
            .map(|((collection, directory), _)| client.ls(collection, directory));
        let listed = futures_util::future::join_all(listing).await;
        for ((_, wanted), listed) in chunk.iter().zip(listed) {
            let Ok(listed) = listed else { continue };
            for &n in wanted {
                let name = items[n].source.path.rsplit('/').next().unwrap_or_default();
                files[n].size = listed
                    .data
                    .iter()
                    .find(|e| e.name == name && e.kind == "file")
                    .map(|e| e.size);
            }
        }
    }
}

/// The warning for a job whose stage-in is likely to arrive after it starts, if it is.
pub(super) async fn late_arrival(
    manager: &TransferManager,
    slurm: &Slurm,
    job: &JobId,
    items: &[PlannedItem],
    files: &[StagedFile],
) -> Option<String> {
    let first = items.first()?;
    let bytes: u64 = files.iter().filter_map(|f| f.size).sum();
    if bytes == 0 {
        return None;
    }
    // Slurm first: it usually has no estimate yet (`N/A`), and then Globus is not asked.
    let start = slurm.expected_start(job).await.ok()??;
    let start = parse_slurm_time(&start)?;
    let rate = measured_rate(
        manager,
        &first.source.collection.to_string(),
        &first.destination.collection.to_string(),
    )
    .await?;
    late_warning(&job.text(), bytes, rate, Local::now(), start)
}

/// This identity's rate between two collections, bytes per second, over its recent
/// successful tasks (total bytes over total time); `None` without any.
async fn measured_rate(manager: &TransferManager, source: &str, destination: &str) -> Option<f64> {
    let query = TaskQuery {
        filter: Some("status:SUCCEEDED/type:TRANSFER".into()),
        orderby: Some("request_time DESC".into()),
        limit: Some(RECENT_TASKS),
        ..TaskQuery::default()
    };
    let tasks = manager.client().task_list(&query).await.ok()?.data;
    let (mut bytes, mut seconds) = (0f64, 0f64);
    for task in tasks {
        let same = task.source_endpoint_id.as_deref() == Some(source)
            && task.destination_endpoint_id.as_deref() == Some(destination);
        if same && task.bytes_transferred > 0 && task.effective_bytes_per_second > 0 {
            bytes += task.bytes_transferred as f64;
            seconds += task.bytes_transferred as f64 / task.effective_bytes_per_second as f64;
        }
    }
    (seconds > 0.0).then(|| bytes / seconds)
}

/// A time as Slurm prints it (`2026-12-06T18:30:00`, the cluster's local time).
pub(crate) fn parse_slurm_time(text: &str) -> Option<DateTime<Local>> {
    let naive = NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%dT%H:%M:%S").ok()?;
    Local.from_local_datetime(&naive).earliest()
}

/// The warning for `bytes` at `rate` bytes/s from `now`, if that ends after `start`.
pub(crate) fn late_warning(
    job: &str,
    bytes: u64,
    rate: f64,
    now: DateTime<Local>,
    start: DateTime<Local>,
) -> Option<String> {
    if bytes == 0 || rate.is_nan() || rate <= 0.0 {
        return None;
    }
    let seconds = (bytes as f64 / rate).ceil();
    // Beyond chrono's range the stage-in never ends: late all the same.
    let finish = chrono::Duration::try_seconds(seconds.min(i64::MAX as f64 / 2_000.0) as i64)
        .and_then(|d| now.checked_add_signed(d));
    if finish.is_some_and(|f| f <= start) {
        return None;
    }
    let finish = finish.map_or("never, at this rate".to_owned(), |f| {
        f.format("%Y-%m-%dT%H:%M:%S").to_string()
    });
    Some(format!(
        "the stage-in ({} at the {}/s measured on recent tasks between the same \
         collections) is expected to finish at {finish}, after Slurm's expected start of job \
         {job} ({}): its first step would wait for it on the job's allocation \
         (--stage-in-timeout bounds that; --hold-until-staged waits in the queue instead)",
        human_bytes(bytes as f64),
        human_bytes(rate),
        start.format("%Y-%m-%dT%H:%M:%S"),
    ))
}

fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let (mut value, mut unit) = (n, 0);
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Local> {
        parse_slurm_time(text).expect("a Slurm time")
    }

    #[test]
    fn a_stage_in_that_ends_after_the_expected_start_is_warned_of() {
        let now = at("2026-12-06T18:00:00");
        // 10 GB at 10 MB/s: 1000 s, finishing 18:16:40, after an 18:10 start.
        let warning =
            late_warning("42", 10_000_000_000, 10e6, now, at("2026-12-06T18:10:00")).expect("late");
        assert!(warning.contains("2026-12-06T18:16:40"), "{warning}");
        assert!(
            warning.contains("job 42 (2026-12-06T18:10:00)"),
            "{warning}"
        );
        assert!(warning.contains("10.0 GB"), "{warning}");
    }

    #[test]
    fn a_stage_in_that_ends_before_the_expected_start_is_not_warned_of() {
        let now = at("2026-12-06T18:00:00");
        let start = at("2026-12-06T18:20:00");
        assert_eq!(late_warning("42", 10_000_000_000, 10e6, now, start), None);
        assert_eq!(late_warning("42", 0, 10e6, now, start), None);
        assert_eq!(late_warning("42", 1, 0.0, now, start), None);
        assert_eq!(late_warning("42", 1, f64::NAN, now, start), None);
    }

    #[test]
    fn a_rate_near_zero_is_late_without_overflowing_the_clock() {
        let now = at("2026-12-06T18:00:00");
        let warning =
            late_warning("7", u64::MAX, 1e-300, now, at("2026-12-06T18:10:00")).expect("late");
        assert!(warning.contains("never, at this rate"), "{warning}");
    }

    #[test]
    fn slurm_times_are_read_and_n_a_is_not() {
        assert!(parse_slurm_time("2026-12-06T18:00:00").is_some());
        assert!(parse_slurm_time("N/A").is_none());
        assert!(parse_slurm_time("Unknown").is_none());
    }
}
