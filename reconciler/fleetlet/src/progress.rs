//! Progress bars for long transfers, shown only when stderr is a terminal: a decorator over the
//! artifact store that counts the bytes of every upload as it streams in, and a bar over a
//! shared byte counter (bundle create and import, whose work runs in library code).

use fleetlet_core::Digest;
use fleetlet_engine::ports::{BlobStore, StoreError};
use fleetlet_engine::registry::{ArtifactStore, BlobSink, BlobUpload, Descriptor};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};

pub struct ProgressStore<'a, S> {
    inner: &'a S,
    bar: ProgressBar,
}

impl<'a, S> ProgressStore<'a, S> {
    /// A store that draws one bar for all downloads; hidden unless stderr is a terminal.
    pub fn new(inner: &'a S, what: &str) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        styled(&bar, what);
        ProgressStore { inner, bar }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

struct Counting<'a> {
    inner: Box<dyn BlobUpload + 'a>,
    bar: ProgressBar,
    written: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl BlobSink for Counting<'_> {
    fn restart(&mut self) -> std::io::Result<()> {
        self.bar
            .set_position(self.bar.position().saturating_sub(self.written));
        self.written = 0;
        self.inner.restart()
    }
}

impl BlobUpload for Counting<'_> {
    fn commit(self: Box<Self>) -> Result<Digest, StoreError> {
        self.inner.commit()
    }
}

impl<S: BlobStore> BlobStore for ProgressStore<'_, S> {
    fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        self.inner.put(bytes)
    }
    fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(digest)
    }
}

impl<S: ArtifactStore> ArtifactStore for ProgressStore<'_, S> {
    fn contains(&self, digest: &Digest) -> bool {
        self.inner.contains(digest)
    }
    fn begin(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<Box<dyn BlobUpload + '_>>, StoreError> {
        let upload = self.inner.begin(digest, size)?;
        Ok(upload.map(|inner| {
            self.bar.inc_length(size);
            Box::new(Counting {
                inner,
                bar: self.bar.clone(),
                written: 0,
            }) as Box<dyn BlobUpload + '_>
        }))
    }
    fn tag(&self, name: &str, descriptor: &Descriptor) -> Result<(), StoreError> {
        self.inner.tag(name, descriptor)
    }
    fn collect_garbage(&self, roots: &BTreeSet<Digest>) -> Result<(usize, u64), StoreError> {
        self.inner.collect_garbage(roots)
    }
}

/// A bar drawn from its own thread over a counter that the work adds to; nothing unless stderr
/// is a terminal. Dropping it clears the bar.
pub struct CounterBar {
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CounterBar {
    pub fn start(what: &str, total: u64) -> CounterBar {
        use std::sync::atomic::Ordering;
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let (counter, done, what) = (counter.clone(), done.clone(), what.to_string());
            std::thread::spawn(move || {
                let bar = ProgressBar::new(total);
                styled(&bar, &what);
                while !done.load(Ordering::Relaxed) {
                    bar.set_position(counter.load(Ordering::Relaxed));
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                bar.finish_and_clear();
            })
        });
        CounterBar {
            counter,
            done,
            thread,
        }
    }

    pub fn counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.counter.clone()
    }
}

impl Drop for CounterBar {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The one look of fleetlet's byte-counting bars.
fn styled(bar: &ProgressBar, what: &str) {
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
}
