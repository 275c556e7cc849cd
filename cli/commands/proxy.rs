//! `proxy inspect|fetch`: what a serialized proxy refers to, and its stored bytes.

use std::path::PathBuf;

use clap::Subcommand;
use ps_globus::Store;
use ps_globus::connector::MultiConnector;
use ps_globus::proxy::ProxyFactory;

use crate::CliResult;
use crate::output::Output;

/// The `proxy` subcommands.
#[derive(Subcommand)]
pub enum ProxyCommand {
    /// Show what serialized proxies refer to: store, connector, source site, size,
    /// sha256, and whether the object is present here.
    Inspect {
        /// File holding one proxy's JSON, or one proxy a line (text before a line's
        /// first `{`, such as `INDEX<TAB>`, is ignored); `-` or nothing reads standard
        /// input.
        #[arg(default_value = "-")]
        file: String,
        #[command(flatten)]
        out: Output,
    },
    /// Write the stored bytes of the object a proxy refers to (as stored: raw byte
    /// payloads as themselves, other values in the store's codec).
    Fetch {
        /// File holding the proxy's JSON; `-` reads standard input.
        #[arg(default_value = "-")]
        file: String,
        /// Where to write the bytes.
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// `proxy ...`
pub fn run(command: ProxyCommand) -> CliResult {
    match command {
        ProxyCommand::Inspect { file, out } => {
            let proxies = read_proxies(&crate::read_input(&file)?)?;
            inspect(&proxies, &out)?;
        }
        ProxyCommand::Fetch { file, output } => {
            let factory = ProxyFactory::from_json(&crate::read_input(&file)?)?;
            let store = Store::from_config((*factory.store).clone())?;
            let bytes =
                ps_globus::block_on(store.connector().get(&factory.key))?.ok_or_else(|| {
                    format!("object {} is not in store '{}'", factory.key, store.name())
                })?;
            std::fs::write(&output, &bytes)
                .map_err(|e| format!("write {}: {e}", output.display()))?;
            eprintln!("wrote {} bytes to {}", bytes.len(), output.display());
        }
    }
    Ok(())
}

/// The proxies in `text`: one JSON document (pretty-printed or not), else one a line.
fn read_proxies(text: &str) -> Result<Vec<ProxyFactory>, Box<dyn std::error::Error>> {
    if let Ok(one) = ProxyFactory::from_json(text) {
        return Ok(vec![one]);
    }
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.find('{').map(|at| &l[at..]))
        .collect();
    if lines.is_empty() {
        // Neither: the whole text's own error says what is wrong with it.
        return Ok(vec![ProxyFactory::from_json(text)?]);
    }
    let mut proxies = Vec::with_capacity(lines.len());
    for line in lines {
        proxies.push(ProxyFactory::from_json(line)?);
    }
    Ok(proxies)
}

/// What one proxy refers to, as `proxy inspect` shows it.
fn summary(factory: &ProxyFactory) -> serde_json::Value {
    // A multi key's object is in one child: say which, and describe the child's key.
    let child = MultiConnector::child_key(&factory.key).ok().flatten();
    let meta = match &child {
        Some((_, inner)) => inner.meta(),
        None => factory.key.meta(),
    };
    let field = |name: &str| meta.and_then(|m| m.get(name)).cloned();
    // Present here: asked of the store's own connector (a Globus store looks at the
    // current site's copy), without fetching anything.
    let present = match Store::from_config((*factory.store).clone()) {
        Ok(store) => ps_globus::block_on(store.connector().exists(&factory.key)),
        Err(e) => Err(e),
    }
    .map_err(|e| e.to_string());
    let mut doc = serde_json::to_value(factory).unwrap_or_default();
    doc["connector"] = factory.store.connector.kind.clone().into();
    if let Some((name, inner)) = &child {
        doc["child"] = name.as_str().into();
        doc["child_connector"] = inner.kind().into();
    }
    doc["source"] = field("source").unwrap_or_default();
    doc["size"] = field("size").unwrap_or_default();
    doc["sha256"] = field("sha256").unwrap_or_default();
    match present {
        Ok(here) => doc["present"] = here.into(),
        Err(e) => {
            doc["present"] = serde_json::Value::Null;
            doc["present_error"] = e.into();
        }
    }
    doc
}

/// `proxy inspect`: a summary of each proxy (text), or `{"DATA": [...]}`.
fn inspect(proxies: &[ProxyFactory], out: &Output) -> CliResult {
    let summaries: Vec<serde_json::Value> = proxies.iter().map(summary).collect();
    if out.machine() {
        return out.emit(&serde_json::json!({ "DATA": summaries }));
    }
    for (n, s) in summaries.iter().enumerate() {
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::Null => "-".to_owned(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let size = s["size"].as_u64().map_or_else(
            || "-".to_owned(),
            |b| format!("{} ({b} bytes)", indicatif::HumanBytes(b)),
        );
        let present = match &s["present"] {
            serde_json::Value::Bool(true) => "yes".to_owned(),
            serde_json::Value::Bool(false) => "no".to_owned(),
            _ => format!("unknown: {}", text(&s["present_error"])),
        };
        if n > 0 {
            println!();
        }
        println!("store:      {}", text(&s["store"]["name"]));
        println!("connector:  {}", text(&s["connector"]));
        if !s["child"].is_null() {
            println!(
                "child:      {} ({})",
                text(&s["child"]),
                text(&s["child_connector"])
            );
        }
        println!("object:     {}", text(&s["key"]["id"]));
        println!("source:     {}", text(&s["source"]));
        println!("size:       {size}");
        println!("sha256:     {}", text(&s["sha256"]));
        println!("here:       {present}");
    }
    Ok(())
}
