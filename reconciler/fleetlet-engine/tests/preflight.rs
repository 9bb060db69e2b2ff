//! The import gate's checks with in-memory fakes: history, commit signature, render, and every
//! artifact resolved from the staged bundle over the site's store and signed per policy (held
//! per workload when the policy is not atomic).

mod support;

use fleetlet_core::{Digest, RepoTree};
use fleetlet_engine::Stage;
use fleetlet_engine::artifacts::Platform;
use fleetlet_engine::ports::Revision;
use fleetlet_engine::preflight::{Layered, Preflight, check_release};
use fleetlet_engine::trust::{TagEvidence, Verifier};
use support::{FakeSource, ManifestRegistry, MemBlobs, Policy, artifact_holding, sign, signer};

// A site without k3s, its apps without env: the gate needs no more.
const SITE: &str = "apiVersion: fleetlet.dev/v1alpha1\nkind: Site\nmetadata: {name: s1}\nspec: {runtimes: [wasm]}\n";

fn app(name: &str, component: &str) -> String {
    format!(
        "apiVersion: fleetlet.dev/v1alpha1\nkind: App\nmetadata: {{name: {name}}}\nspec:\n  targets: [{{sites: [s1]}}]\n  workloads:\n    - {{name: w, runtime: wasm, component: {component}, command: {{}}}}\n"
    )
}

/// A Wasm artifact `reg.test/fleet/NAME:v1` whose manifest is staged and whose blobs are in
/// `blobs`; with a signature manifest staged when `signed`.
fn artifact(staged: &ManifestRegistry, blobs: &MemBlobs, name: &str, signed: bool) {
    let repository = format!("fleet/{name}");
    let content = format!("\0asm {name}");
    let (digest, _) = artifact_holding(staged, blobs, &repository, "v1", content.as_bytes(), true);
    if signed {
        sign(staged, blobs, &repository, &digest);
    }
}

struct Case {
    git: FakeSource,
    staged: ManifestRegistry,
    upper: MemBlobs,
    lower: MemBlobs,
}

impl Case {
    fn new() -> Case {
        // What neither the bundle nor the site has is "not in the bundle".
        Case {
            git: FakeSource::default(),
            staged: ManifestRegistry::missing_as("not in the bundle"),
            upper: MemBlobs::refusing_downloads_as("not in the bundle"),
            lower: MemBlobs::refusing_downloads_as("not in the bundle"),
        }
    }

    fn commit(&self, id: &str, parent: Option<&str>, apps: &[(&str, &str)], signature: &[u8]) {
        let mut t = RepoTree::new();
        t.insert("sites.yaml", SITE);
        for (name, component) in apps {
            t.insert(
                format!("apps/{name}.yaml").as_str(),
                app(name, component).as_str(),
            );
        }
        let mut git = self.git.0.borrow_mut();
        git.commits.insert(id.into(), t);
        git.parents.insert(id.into(), parent.map(Into::into));
        drop(git);
        if !signature.is_empty() {
            self.git.sign(id, signature);
        }
    }

    fn check(
        &self,
        commit: &str,
        site: &str,
        applied: Option<&str>,
        policy: Option<&Policy>,
    ) -> Result<fleetlet_engine::preflight::Checked, fleetlet_engine::preflight::PreflightError>
    {
        let rev = Revision {
            commit: commit.into(),
            reference: "refs/heads/main".into(),
            summary: String::new(),
            time: 0,
        };
        let store = Layered {
            upper: &self.upper,
            lower: &self.lower,
        };
        check_release(
            &self.git,
            &rev,
            &Preflight {
                site,
                applied,
                verifier: policy.map(|p| p as &dyn Verifier),
                registry: &self.staged,
                store: &store,
                platform: Platform::host(),
                container_images: false,
            },
        )
    }
}

#[test]
fn a_release_passes_only_when_every_check_does() {
    let c = Case::new();
    // `a` was on the site before (its blobs in the lower store), `b` comes with the bundle.
    artifact(&c.staged, &c.lower, "a", true);
    artifact(&c.staged, &c.upper, "b", true);
    artifact(&c.staged, &MemBlobs::default(), "lost", true);
    artifact(&c.staged, &c.upper, "unsigned", false);
    let (a, b) = ("reg.test/fleet/a:v1", "reg.test/fleet/b:v1");
    c.commit("c1", None, &[("one", a)], b"good");
    c.commit("c2", Some("c1"), &[("one", a), ("two", b)], b"good");
    c.commit("c3", Some("c2"), &[("one", a)], b"");
    c.commit("c4", Some("c2"), &[("one", a)], b"forged");
    c.commit(
        "c5",
        Some("c2"),
        &[("one", a), ("three", "reg.test/fleet/lost:v1")],
        b"good",
    );
    c.commit(
        "c6",
        Some("c2"),
        &[("one", a), ("four", "reg.test/fleet/unsigned:v1")],
        b"good",
    );
    c.commit(
        "c7",
        Some("c2"),
        &[("one", a), ("five", "reg.test/fleet/missing:v1")],
        b"good",
    );
    let atomic = Policy::default();

    let site_before: Vec<Digest> = c.lower.digests();
    let ok = c.check("c2", "s1", Some("c1"), Some(&atomic)).unwrap();
    assert_eq!(ok.commit_signers, [signer("alice")]);
    assert_eq!(ok.workloads, ["one/w", "two/w"]);
    assert_eq!(ok.artifacts.len(), 2, "{ok:?}");
    assert!(ok.artifacts.values().all(|s| s == &[signer("release")]));
    assert!(ok.held.is_empty());
    let site_after: Vec<Digest> = c.lower.digests();
    assert_eq!(
        site_after, site_before,
        "checking writes nothing to the site's store"
    );

    // (commit, applied, stage, what the message says)
    let cases: [(&str, Option<&str>, Stage, &str); 7] = [
        ("c3", None, Stage::Verify, "unsigned commit"),
        ("c4", None, Stage::Verify, "unknown key"),
        ("c1", Some("c2"), Stage::Verify, "does not descend from c2"),
        ("c5", None, Stage::Store, "reg.test/fleet/lost:v1"),
        ("c6", None, Stage::Verify, "no signature"),
        ("c7", None, Stage::Store, "reg.test/fleet/missing:v1"),
        ("c2", Some("c2"), Stage::Render, "no-such-site"),
    ];
    for (commit, applied, stage, want) in cases {
        let site = if stage == Stage::Render {
            "no-such-site"
        } else {
            "s1"
        };
        let e = c.check(commit, site, applied, Some(&atomic)).unwrap_err();
        assert_eq!(e.stage, stage, "{commit}: {e}");
        let text = format!("{} {:?}", e.message, e.details);
        assert!(text.contains(want), "{commit}: {text}");
    }

    // A signed rollback instruction on the older commit lets it through.
    c.git.0.borrow_mut().tags.insert(
        "c1".into(),
        vec![TagEvidence {
            name: "back".into(),
            message: "fleetlet-rollback-from: c2".into(),
            time: 0,
            signed: None,
        }],
    );
    let back = c.check("c1", "s1", Some("c2"), Some(&atomic)).unwrap();
    assert_eq!(back.commit_signers, [signer("ops"), signer("alice")]);

    // Not atomic: the unsigned artifact's workload is held, the rest passes.
    let lenient = Policy {
        atomic: false,
        ..Policy::default()
    };
    let held = c.check("c6", "s1", None, Some(&lenient)).unwrap();
    assert_eq!(held.held.keys().collect::<Vec<_>>(), ["four/w"]);
    assert!(held.held["four/w"].contains("no signature"));
    // Without a verifier only completeness is checked.
    assert!(
        c.check("c3", "s1", None, None)
            .unwrap()
            .commit_signers
            .is_empty()
    );
    assert!(c.check("c7", "s1", None, None).is_err());
}
