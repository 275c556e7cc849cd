//! Everything the commands show: JSON documents on stdout and progress bars on a
//! terminal, in one place so every command looks and behaves alike.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

/// Prints `value` as one pretty JSON document on stdout.
pub fn print_json(value: &impl Serialize) -> Result<(), serde_json::Error> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A bar with `template` (indicatif syntax) and our `=> ` characters.
fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Items of one command as they finish, on stderr; hidden for JSON output or when
/// stderr is not a terminal.
pub fn item_bar(len: u64, hidden: bool) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = styled(
        ProgressBar::new(len),
        "{spinner} [{bar:40}] {pos}/{len} items {elapsed_precise}",
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The aggregate bar of `status --watch`: files of every task in flight, with an ETA.
pub fn aggregate_bar(bars: &MultiProgress) -> ProgressBar {
    let bar = styled(
        bars.add(ProgressBar::new(0)),
        "{prefix} [{bar:30}] {pos}/{len} files, ETA {eta}  {msg}",
    );
    bar.set_prefix("all tasks");
    bar
}

/// One task's bar under the aggregate bar of `status --watch`.
pub fn task_bar(bars: &MultiProgress, id: String) -> ProgressBar {
    let bar = styled(
        bars.add(ProgressBar::new(0)),
        "  {prefix} [{bar:30}] {pos}/{len} {msg}",
    );
    bar.set_prefix(id);
    bar
}

/// A bar of the demo: `prefix` counted up to `len`.
pub fn demo_bar(bars: &MultiProgress, prefix: &'static str, len: u64) -> ProgressBar {
    let bar = styled(
        bars.add(ProgressBar::new(len)),
        "{prefix:>22} [{bar:40}] {pos}/{len} {msg}",
    );
    bar.set_prefix(prefix);
    bar
}
