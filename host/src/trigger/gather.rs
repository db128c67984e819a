//! Calls gathered across partitions, for a plugin of the `partitions-handler` form: the
//! partitions whose records arrive within `batch_wait_ms` of each other share one call.
//!
//! The first record a partition worker takes opens a *window* (or joins the one open).
//! The window's call task waits until `batch_wait_ms` after the window opened (or until it
//! holds `batch_size` events), then for a free instance, and then closes the window: no
//! partition joins it any more. Until then every partition that joined goes on taking its
//! records into the window, so a window waiting for an instance fills up, as one
//! partition's batch does. Each partition then submits its events (or leaves, having
//! none to hand over), and once all have, the call carries them all, one
//! `partition-events` per partition. Each partition gets its own outcomes back and settles
//! them as after any call; retries and one-at-a-time hand-overs are the partition's own
//! calls, not gathered.
//!
//! A window holds at most `batch_size` events in all: a partition reserves each record's
//! place before it waits for the record.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, oneshot, watch};

use super::Shared;
use crate::bindings::partitions::exports::polyhost::platform::partitions_handler::PartitionEvents;
use crate::bindings::polyhost::platform::types::Outcome;
use crate::runtime::{BatchFailure, RecordMeta, Records};

/// What a partition gets back from a gathered call: its outcomes, or why the whole call
/// failed and how many events the call carried (a failure of a call of several events is
/// not pinned on any one of them).
pub(crate) type Answer = Result<Vec<Outcome>, (BatchFailure, usize)>;

/// The open window of one plugin's partitions, if any.
#[derive(Debug, Default)]
pub(crate) struct Gather {
    open: Mutex<Option<Arc<Window>>>,
}

#[derive(Debug)]
struct Window {
    size: usize,
    /// Places taken (records in the window, or reserved by a partition waiting for one).
    places: AtomicUsize,
    /// Notified when the window is full.
    full: Notify,
    /// Becomes `true` when the window closes: partitions stop taking records and submit.
    closed: watch::Sender<bool>,
    /// Notified whenever a partition submits or leaves.
    finished: Notify,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    joined: usize,
    finished: usize,
    /// Set when the window closes; a partition then joins a new window.
    sealed: bool,
    submissions: Vec<Submission>,
}

#[derive(Debug)]
struct Submission {
    events: PartitionEvents,
    records: Vec<Arc<RecordMeta>>,
    answer: oneshot::Sender<Answer>,
}

/// A partition's place in a window, from its first record to its submission. Dropped
/// unsubmitted (the partition had nothing to hand over, or was revoked), it leaves.
#[derive(Debug)]
pub(crate) struct Ticket {
    window: Arc<Window>,
    closed: watch::Receiver<bool>,
    finished: bool,
}

impl Gather {
    /// A place in the open window for a partition's first record (or in a new window, whose
    /// call task is started, when none is open or the open one is closed or full).
    pub(crate) fn join(
        &self,
        shared: &Arc<Shared>,
        size: usize,
        wait: std::time::Duration,
    ) -> Ticket {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(window) = open.as_ref()
            && window.reserve()
        {
            let mut inner = window.inner.lock().unwrap_or_else(|e| e.into_inner());
            if !inner.sealed {
                inner.joined += 1;
                drop(inner);
                return Ticket::new(window.clone());
            }
            window.unreserve();
        }
        let (closed, _) = watch::channel(false);
        let window = Arc::new(Window {
            size: size.max(1),
            places: AtomicUsize::new(1),
            full: Notify::new(),
            closed,
            finished: Notify::new(),
            inner: Mutex::new(Inner {
                joined: 1,
                ..Inner::default()
            }),
        });
        *open = Some(window.clone());
        tokio::spawn(call(shared.clone(), window.clone(), Instant::now() + wait));
        Ticket::new(window)
    }

    /// Forgets `window` as the open one, if it is.
    fn forget(&self, window: &Arc<Window>) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.as_ref().is_some_and(|w| Arc::ptr_eq(w, window)) {
            *open = None;
        }
    }
}

impl Window {
    /// Takes a place for one more record, unless the window is full.
    fn reserve(&self) -> bool {
        let taken = self
            .places
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.size).then_some(n + 1)
            })
            .is_ok();
        if taken && self.places.load(Ordering::Acquire) >= self.size {
            self.full.notify_one();
        }
        taken
    }

    fn unreserve(&self) {
        self.places.fetch_sub(1, Ordering::AcqRel);
    }

    /// Counts a partition out (submitted or left).
    fn finish(&self, submission: Option<Submission>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.finished += 1;
        inner.submissions.extend(submission);
        drop(inner);
        self.finished.notify_one();
    }
}

impl Ticket {
    fn new(window: Arc<Window>) -> Ticket {
        let closed = window.closed.subscribe();
        Ticket {
            window,
            closed,
            finished: false,
        }
    }

    /// Takes a place for the partition's next record: `false` when the window is full or
    /// closed (the partition then submits what it has).
    pub(crate) fn reserve(&self) -> bool {
        !*self.closed.borrow() && self.window.reserve()
    }

    /// Gives back a place taken for a record that did not come.
    pub(crate) fn unreserve(&self) {
        self.window.unreserve();
    }

    /// What becomes `true` when the window closes.
    pub(crate) fn clone_closed(&self) -> watch::Receiver<bool> {
        self.closed.clone()
    }

    /// Hands the partition's events (in offset order) and their records to the window's
    /// call, and waits for its outcomes. `None` when the call was lost (the host failed):
    /// the events are to be handed over again.
    pub(crate) async fn submit(
        mut self,
        events: PartitionEvents,
        records: Vec<Arc<RecordMeta>>,
    ) -> Option<Answer> {
        let (answer, rx) = oneshot::channel();
        self.finished = true;
        self.window.finish(Some(Submission {
            events,
            records,
            answer,
        }));
        rx.await.ok()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.finished {
            self.window.finish(None);
        }
    }
}

/// A window's call: waits for the window to fill or its time to pass, then for an instance,
/// closes the window, waits for every partition in it, and makes the call.
async fn call(shared: Arc<Shared>, window: Arc<Window>, deadline: Instant) {
    tokio::select! {
        _ = tokio::time::sleep_until(deadline.into()) => {}
        _ = window.full.notified() => {}
    }
    let plugin = shared.plugin();
    let permit = plugin.instance().await;
    window
        .inner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .sealed = true;
    shared.gather.forget(&window);
    window.closed.send_replace(true);
    let submissions = loop {
        let finished = window.finished.notified();
        {
            let mut inner = window.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.finished == inner.joined {
                break std::mem::take(&mut inner.submissions);
            }
        }
        finished.await;
    };
    if submissions.is_empty() {
        return;
    }
    // The version in place now: a swap to another form hands each partition over alone.
    let plugin = shared.plugin();
    let events: usize = submissions.iter().map(|s| s.events.events.len()).sum();
    if plugin.takes_partitions() {
        let mut parts = Vec::with_capacity(submissions.len());
        let mut records = Vec::with_capacity(submissions.len());
        let mut answers = Vec::with_capacity(submissions.len());
        for s in submissions {
            shared.series.first_hand_over(&s.records);
            records.push((
                Arc::from(s.events.batch.topic.as_str()),
                s.events.batch.partition,
                s.records,
            ));
            parts.push(s.events);
            answers.push(s.answer);
        }
        tracing::trace!(plugin = %plugin.name, partitions = parts.len(), events, "handing over a gathered call");
        let handled = timed(
            &shared,
            plugin.handle_partitions_holding(permit, parts, Records::of_partitions(records)),
        )
        .await;
        match handled {
            Ok(lists) => {
                for (answer, outcomes) in answers.into_iter().zip(lists) {
                    let _ = answer.send(Ok(outcomes));
                }
            }
            Err(failure) => {
                for answer in answers {
                    let _ = answer.send(Err((failure.clone(), events)));
                }
            }
        }
    } else {
        drop(permit);
        for s in submissions {
            let permit = plugin.instance().await;
            shared.series.first_hand_over(&s.records);
            let batch = &s.events.batch;
            let records = Records::new(&batch.topic, batch.partition, s.records);
            let handled = timed(
                &shared,
                plugin.handle_holding(permit, batch, &s.events.events, records),
            )
            .await;
            let n = s.events.events.len();
            let _ = s.answer.send(handled.map_err(|f| (f, n)));
        }
    }
}

/// Awaits `call` (a call into the plugin), counting its time in the plugin's
/// `batch_seconds`.
async fn timed<T>(shared: &Shared, call: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = call.await;
    shared
        .series
        .batch_seconds
        .observe(started.elapsed().as_secs_f64());
    out
}
