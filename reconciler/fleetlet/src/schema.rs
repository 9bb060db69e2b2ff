//! JSON Schemas of every document kind, generated from the Rust types. `schemas/` holds the
//! output; a test fails when the two drift.

use crate::config::AgentConfig;
use fleetlet_core::model::{App, Site};
use schemars::schema_for;

/// (file name, pretty JSON) for each kind.
pub fn all() -> Vec<(&'static str, String)> {
    let render =
        |s: schemars::Schema| serde_json::to_string_pretty(&s).expect("schemas serialise") + "\n";
    vec![
        ("site.schema.json", render(schema_for!(Site))),
        ("app.schema.json", render(schema_for!(App))),
        ("agent-config.schema.json", render(schema_for!(AgentConfig))),
        (
            "desired-state.schema.json",
            render(schema_for!(fleetlet_core::DesiredState)),
        ),
        (
            "bundle-manifest.schema.json",
            render(schema_for!(crate::bundle::ManifestSchema)),
        ),
        (
            "bundle-import-record.schema.json",
            render(schema_for!(crate::bundle::import::ImportRecord)),
        ),
        (
            "audit-record.schema.json",
            render(schema_for!(fleetlet_audit::Line)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    /// Regenerate with `cargo run -p fleetlet -- schemas --out schemas`.
    #[test]
    fn checked_in_schemas_match_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        for (name, want) in super::all() {
            let got = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert!(
                got == want,
                "schemas/{name} is out of date: run `cargo run -p fleetlet -- schemas --out schemas`"
            );
        }
    }
}
