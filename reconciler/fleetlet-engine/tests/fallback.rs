//! `FallbackRegistry`: the network registry first, the site's store only when the registry is
//! unavailable (or there is none). A registry that answers — even "not found" — is authoritative.

use fleetlet_core::Digest;
use fleetlet_core::reference::RegistryRef;
use fleetlet_engine::registry::*;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Answer,
    Unavailable,
    NotFound,
    Denied,
    Invalid,
}

/// A registry that answers every fetch with `bytes`, or fails as `mode` says; counts calls.
struct Fake {
    mode: Mode,
    bytes: Vec<u8>,
    calls: Arc<Mutex<Vec<&'static str>>>,
    /// Bytes written into the sink before failing (a download cut mid-body).
    partial: bool,
}

fn fake(mode: Mode, bytes: &[u8]) -> (Box<Fake>, Arc<Mutex<Vec<&'static str>>>) {
    let calls = Arc::new(Mutex::new(vec![]));
    (
        Box::new(Fake {
            mode,
            bytes: bytes.to_vec(),
            calls: calls.clone(),
            partial: false,
        }),
        calls,
    )
}

impl Fake {
    fn answer<T>(&self, call: &'static str, r: &RegistryRef, ok: T) -> Result<T, RegistryError> {
        self.calls.lock().unwrap().push(call);
        let reference = r.to_string();
        let message = format!("{:?}", self.mode);
        match self.mode {
            Mode::Answer => Ok(ok),
            Mode::Unavailable => Err(RegistryError::Unavailable { reference, message }),
            Mode::NotFound => Err(RegistryError::NotFound { reference, message }),
            Mode::Denied => Err(RegistryError::Denied { reference, message }),
            Mode::Invalid => Err(RegistryError::Invalid { reference, message }),
        }
    }
    fn manifest(&self) -> FetchedManifest {
        FetchedManifest {
            bytes: self.bytes.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::of(&self.bytes),
        }
    }
}

impl Registry for Fake {
    fn fetch_manifest(&self, r: &RegistryRef) -> Result<FetchedManifest, RegistryError> {
        self.answer("fetch_manifest", r, self.manifest())
    }
    fn fetch_blob(
        &self,
        r: &RegistryRef,
        _: &Descriptor,
        sink: &mut dyn BlobSink,
    ) -> Result<u64, RegistryError> {
        if self.partial {
            sink.write_all(b"half a bl").unwrap();
        }
        self.answer("fetch_blob", r, ())?;
        sink.write_all(&self.bytes).unwrap();
        Ok(self.bytes.len() as u64)
    }
    fn push_blob(&self, r: &RegistryRef, _: &Digest, _: &[u8]) -> Result<(), RegistryError> {
        self.answer("push_blob", r, ())
    }
    fn push_manifest(&self, r: &RegistryRef, b: &[u8], _: &str) -> Result<Digest, RegistryError> {
        self.answer("push_manifest", r, Digest::of(b))
    }
    fn referrers(&self, r: &RegistryRef) -> Result<Option<FetchedManifest>, RegistryError> {
        self.answer("referrers", r, Some(self.manifest()))
    }
}

struct Sink(Vec<u8>);
impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl BlobSink for Sink {
    fn restart(&mut self) -> std::io::Result<()> {
        self.0.clear();
        Ok(())
    }
}

fn reference() -> RegistryRef {
    RegistryRef {
        registry: "registry.example.com".into(),
        repository: "fleet/app".into(),
        tag: Some("v1".into()),
        digest: None,
    }
}

fn descriptor(bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: "application/wasm".into(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
    }
}

#[test]
fn an_unavailable_registry_is_answered_from_the_store() {
    let (mut primary, primary_calls) = fake(Mode::Unavailable, b"remote");
    primary.partial = true;
    let (local, local_calls) = fake(Mode::Answer, b"stored");
    let registry = FallbackRegistry::new(primary, local);

    let m = registry.fetch_manifest(&reference()).unwrap();
    assert_eq!(m.bytes, b"stored");
    // A download the primary broke mid-body restarts before the store fills the sink.
    let mut sink = Sink(vec![]);
    let n = registry
        .fetch_blob(&reference(), &descriptor(b"stored"), &mut sink)
        .unwrap();
    assert_eq!((n, sink.0.as_slice()), (6, &b"stored"[..]));
    let pinned = reference().pinned(Digest::of(b"subject"));
    assert_eq!(
        registry.referrers(&pinned).unwrap().unwrap().bytes,
        b"stored"
    );
    assert_eq!(
        *primary_calls.lock().unwrap(),
        ["fetch_manifest", "fetch_blob", "referrers"]
    );
    assert_eq!(*local_calls.lock().unwrap(), *primary_calls.lock().unwrap());
}

#[test]
fn an_answering_registry_wins_over_the_store() {
    let (primary, _) = fake(Mode::Answer, b"remote");
    let (local, local_calls) = fake(Mode::Answer, b"stored");
    let registry = FallbackRegistry::new(primary, local);
    assert_eq!(
        registry.fetch_manifest(&reference()).unwrap().bytes,
        b"remote"
    );
    let mut sink = Sink(vec![]);
    registry
        .fetch_blob(&reference(), &descriptor(b"remote"), &mut sink)
        .unwrap();
    assert_eq!(sink.0, b"remote");
    assert!(local_calls.lock().unwrap().is_empty());
}

/// Online, "not found" is the registry's answer (a deleted tag, a typo in the fleet repo): the
/// store's older pull of that tag must not be applied instead. Nor are credentials that the
/// registry refuses, or an answer it got wrong, papered over from the store.
#[test]
fn a_registry_that_answers_is_authoritative_even_when_it_says_no() {
    for mode in [Mode::NotFound, Mode::Denied, Mode::Invalid] {
        let (primary, _) = fake(mode, b"remote");
        let (local, local_calls) = fake(Mode::Answer, b"stored");
        let registry = FallbackRegistry::new(primary, local);
        let e = registry.fetch_manifest(&reference()).unwrap_err();
        let got = match e {
            RegistryError::NotFound { .. } => Mode::NotFound,
            RegistryError::Denied { .. } => Mode::Denied,
            RegistryError::Invalid { .. } => Mode::Invalid,
            other => panic!("{mode:?}: {other}"),
        };
        assert_eq!(got, mode);
        let e = registry
            .fetch_blob(&reference(), &descriptor(b"x"), &mut Sink(vec![]))
            .unwrap_err();
        assert!(!matches!(e, RegistryError::Unavailable { .. }), "{e}");
        assert!(
            registry
                .referrers(&reference().pinned(Digest::of(b"s")))
                .is_err()
        );
        assert!(local_calls.lock().unwrap().is_empty(), "{mode:?}");
    }
}

#[test]
fn unavailable_and_not_in_the_store_stays_unavailable() {
    for local_mode in [Mode::NotFound, Mode::Invalid] {
        let (primary, _) = fake(Mode::Unavailable, b"remote");
        let (local, local_calls) = fake(local_mode, b"");
        let registry = FallbackRegistry::new(primary, local);
        let e = registry.fetch_manifest(&reference()).unwrap_err();
        assert!(e.is_transient(), "{e}");
        let text = e.to_string();
        assert!(text.contains("registry unavailable"), "{text}");
        assert!(text.contains("site's store"), "{text}");
        assert_eq!(*local_calls.lock().unwrap(), ["fetch_manifest"]);
    }
}

#[test]
fn without_a_registry_the_store_answers_and_refuses_pushes() {
    let (local, local_calls) = fake(Mode::Answer, b"stored");
    let registry = FallbackRegistry::local_only(local);
    assert_eq!(
        registry.fetch_manifest(&reference()).unwrap().bytes,
        b"stored"
    );
    assert!(matches!(
        registry.push_blob(&reference(), &Digest::of(b"x"), b"x"),
        Err(RegistryError::Denied { .. })
    ));
    assert!(matches!(
        registry.push_manifest(&reference(), b"{}", "application/json"),
        Err(RegistryError::Denied { .. })
    ));
    assert_eq!(*local_calls.lock().unwrap(), ["fetch_manifest"]);

    // What the store lacks is simply not found.
    let (local, _) = fake(Mode::NotFound, b"");
    let registry = FallbackRegistry::local_only(local);
    assert!(matches!(
        registry.fetch_manifest(&reference()),
        Err(RegistryError::NotFound { .. })
    ));
}

#[test]
fn pushes_go_to_the_registry_only() {
    let (primary, primary_calls) = fake(Mode::Unavailable, b"");
    let (local, local_calls) = fake(Mode::Answer, b"");
    let registry = FallbackRegistry::new(primary, local);
    assert!(matches!(
        registry.push_blob(&reference(), &Digest::of(b"x"), b"x"),
        Err(RegistryError::Unavailable { .. })
    ));
    assert!(matches!(
        registry.push_manifest(&reference(), b"{}", "application/json"),
        Err(RegistryError::Unavailable { .. })
    ));
    assert_eq!(
        *primary_calls.lock().unwrap(),
        ["push_blob", "push_manifest"]
    );
    assert!(local_calls.lock().unwrap().is_empty());
}
