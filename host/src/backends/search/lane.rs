//! One plugin's `bulk-index` calls in flight share `_bulk` requests.
//!
//! Elasticsearch's cost of a bulk request is mostly per request, not per document (on a
//! 2-core machine of the kind the platform benchmark runs on: 10 documents 2.4 ms, 100
//! documents 5 ms, 500 documents 15 ms), and a plugin that indexes per partition (the
//! auditor: a batch is one partition's events) sends many small bulks at once. So a plugin's
//! bulks go through its [`Lane`]: at most [`REQUESTS_IN_FLIGHT`] requests at a time, and the
//! calls that arrive while they are busy wait and go out together in the next one, up to
//! [`MAX_ITEMS`] documents and [`MAX_BYTES`] of them (a call larger than that goes alone).
//! Each call gets back exactly its own items' answers, in order; a request that fails
//! fails each call in it with the same error.
//!
//! Every call is checked on its own before it is queued (the grant, the ids, the
//! documents), so a request only ever carries items that their own call was allowed to
//! send. A call abandoned while queued (its host-call timeout) is taken out of the queue; one
//! abandoned after its request left is written anyway, as a dropped request might have been
//! before (the items are keyed by id, so a retry writes the same documents again).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use elasticsearch::http::request::JsonBody;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::error::HostError;

/// `_bulk` requests one plugin has in flight at once.
pub const REQUESTS_IN_FLIGHT: usize = 2;

/// The most documents one shared request carries.
pub const MAX_ITEMS: usize = 5_000;

/// The most document bytes one shared request carries (Elasticsearch refuses a request
/// over `http.max_content_length`, 100 MB by default).
pub const MAX_BYTES: usize = 16 << 20;

/// A call's share of a request's answer: its own items of the reply's `items`, in order.
pub type Items = Result<Vec<Value>, HostError>;

/// Sends one `_bulk` request and returns its answer's `items`.
pub trait Post: Send + Sync + 'static {
    fn post(
        &self,
        lines: Vec<JsonBody<Value>>,
    ) -> impl Future<Output = Result<Vec<Value>, HostError>> + Send;
}

/// One call's share of a request: its checked lines (two per item).
pub struct Part {
    pub lines: Vec<JsonBody<Value>>,
    pub items: usize,
    /// Its documents' bytes.
    pub bytes: usize,
}

struct Entry {
    id: u64,
    part: Part,
    reply: oneshot::Sender<Items>,
}

/// A plugin's queue of bulk calls and the requests that carry them.
pub struct Lane<P> {
    post: Arc<P>,
    queue: Mutex<VecDeque<Entry>>,
    requests: Arc<Semaphore>,
    next_id: AtomicU64,
}

impl<P> std::fmt::Debug for Lane<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("queued", &self.lock().len())
            .field("requests_free", &self.requests.available_permits())
            .finish()
    }
}

impl<P> Lane<P> {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<P: Post> Lane<P> {
    pub fn new(post: P) -> Self {
        Lane {
            post: Arc::new(post),
            queue: Mutex::new(VecDeque::new()),
            requests: Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT)),
            next_id: AtomicU64::new(0),
        }
    }

    /// Sends `part` (in a request of its own or shared) and returns its own items of the
    /// answer.
    pub async fn submit(&self, part: Part) -> Items {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        self.lock().push_back(Entry {
            id,
            part,
            reply: tx,
        });
        let _unqueue = Unqueue { lane: self, id };
        loop {
            // Whoever gets a request slot sends what is queued, this call's part or not;
            // a call whose part left in another's request just waits for its answer.
            let permit = tokio::select! {
                biased;
                answer = &mut rx => return answered(answer),
                permit = self.requests.clone().acquire_owned() => permit,
            };
            let permit = permit.expect("the lane's semaphore is never closed");
            let taken = take(&mut self.lock());
            if !taken.is_empty() {
                // Sent from a task of its own, so a caller that gives up (its timeout) does
                // not take its companions' answers with it.
                tokio::spawn(send(self.post.clone(), taken, permit));
            }
            if !self.lock().iter().any(|e| e.id == id) {
                break;
            }
        }
        answered(rx.await)
    }
}

fn answered(answer: Result<Items, oneshot::error::RecvError>) -> Items {
    answer.unwrap_or_else(|_| Err(HostError::other("bulk-index: the request was lost")))
}

/// Takes a call's entry out of the queue if it is still there when the call ends.
struct Unqueue<'a, P> {
    lane: &'a Lane<P>,
    id: u64,
}

impl<P> Drop for Unqueue<'_, P> {
    fn drop(&mut self) {
        self.lane.lock().retain(|e| e.id != self.id);
    }
}

/// The queued entries one request carries: the first whatever its size, then the next ones
/// in order while they fit in [`MAX_ITEMS`] and [`MAX_BYTES`].
fn take(queue: &mut VecDeque<Entry>) -> Vec<Entry> {
    let mut taken: Vec<Entry> = Vec::new();
    let (mut items, mut bytes) = (0, 0);
    while let Some(next) = queue.front() {
        let fits = items + next.part.items <= MAX_ITEMS && bytes + next.part.bytes <= MAX_BYTES;
        if !taken.is_empty() && !fits {
            break;
        }
        let entry = queue.pop_front().expect("looked at the front");
        items += entry.part.items;
        bytes += entry.part.bytes;
        taken.push(entry);
    }
    taken
}

/// Sends `entries` as one request and answers each with its own items.
async fn send<P: Post>(post: Arc<P>, entries: Vec<Entry>, _permit: OwnedSemaphorePermit) {
    let total: usize = entries.iter().map(|e| e.part.items).sum();
    let mut lines = Vec::with_capacity(total * 2);
    let mut waiting = Vec::with_capacity(entries.len());
    for entry in entries {
        lines.extend(entry.part.lines);
        waiting.push((entry.part.items, entry.reply));
    }
    let answer = post.post(lines).await.and_then(|items| {
        if items.len() == total {
            Ok(items)
        } else {
            Err(HostError::other(format!(
                "bulk-index: Elasticsearch answered {} items to a request of {total}",
                items.len()
            )))
        }
    });
    match answer {
        Ok(items) => {
            let mut items = items.into_iter();
            for (n, reply) in waiting {
                let _ = reply.send(Ok(items.by_ref().take(n).collect()));
            }
        }
        Err(e) => {
            for (_, reply) in waiting {
                let _ = reply.send(Err(HostError::new(e.kind, e.message.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Notify;
    use tokio::task::JoinHandle;

    /// Answers each item `201`, or `400` when its document is `{"bad": true}`, and records
    /// each request's size; holds every request until `open` is notified, when gated.
    struct Fake {
        sizes: Mutex<Vec<usize>>,
        gate: Option<Arc<Notify>>,
        posted: AtomicUsize,
    }

    impl Post for Fake {
        async fn post(&self, lines: Vec<JsonBody<Value>>) -> Result<Vec<Value>, HostError> {
            self.posted.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                gate.notified().await;
            }
            let lines: Vec<Value> = lines
                .into_iter()
                .map(|l| serde_json::from_slice(&bytes(l)).unwrap())
                .collect();
            self.sizes.lock().unwrap().push(lines.len() / 2);
            Ok(lines
                .chunks(2)
                .map(|pair| {
                    if pair[1]["bad"] == json!(true) {
                        json!({"index": {"status": 400, "error": {"type": "bad"}}})
                    } else {
                        json!({"index": {"status": 201}})
                    }
                })
                .collect())
        }
    }

    fn bytes(body: JsonBody<Value>) -> Vec<u8> {
        use elasticsearch::http::request::Body as _;
        let mut buf = bytes::BytesMut::new();
        body.write(&mut buf).unwrap();
        buf.to_vec()
    }

    fn part(docs: &[Value]) -> Part {
        let mut lines = Vec::new();
        for d in docs {
            lines.push(JsonBody::new(json!({"index": {"_index": "i", "_id": "x"}})));
            lines.push(JsonBody::new(d.clone()));
        }
        Part {
            lines,
            items: docs.len(),
            bytes: docs.len(),
        }
    }

    /// Per item, `None` when stored, `Some(error)` when refused.
    type Outcomes = Result<Vec<Option<String>>, HostError>;

    /// Submits `part` and reads its items' outcomes.
    async fn submit(lane: &Lane<Fake>, part: Part) -> Outcomes {
        lane.submit(part).await.and_then(|items| outcomes(&items))
    }

    fn outcomes(items: &[Value]) -> Outcomes {
        Ok(items
            .iter()
            .map(|i| i["index"].get("error").map(|e| e.to_string()))
            .collect())
    }

    /// A lane over a gated [`Fake`] whose [`REQUESTS_IN_FLIGHT`] requests are taken by
    /// one-document calls and held until the gate opens; and those calls.
    async fn held() -> (Arc<Lane<Fake>>, Arc<Notify>, Vec<JoinHandle<Outcomes>>) {
        let gate = Arc::new(Notify::new());
        let lane = Arc::new(Lane::new(Fake {
            sizes: Mutex::new(Vec::new()),
            gate: Some(gate.clone()),
            posted: AtomicUsize::new(0),
        }));
        let mut calls = Vec::new();
        for _ in 0..REQUESTS_IN_FLIGHT {
            let lane = lane.clone();
            calls.push(tokio::spawn(async move {
                submit(&lane, part(&[json!({})])).await
            }));
        }
        while lane.post.posted.load(Ordering::SeqCst) < REQUESTS_IN_FLIGHT {
            tokio::task::yield_now().await;
        }
        (lane, gate, calls)
    }

    #[tokio::test]
    async fn calls_waiting_for_a_request_go_out_together_and_each_gets_its_own_outcomes() {
        // The first calls take the requests and are held there.
        let (lane, gate, calls) = held().await;
        // Ten more, each with one refused document at its own place, queue behind them.
        let mut queued = Vec::new();
        for i in 0..10 {
            let lane = lane.clone();
            let docs: Vec<Value> = (0..5).map(|j| json!({"bad": j == i % 5})).collect();
            queued.push(tokio::spawn(async move {
                (i, submit(&lane, part(&docs)).await)
            }));
        }
        while lane.lock().len() < 10 {
            tokio::task::yield_now().await;
        }
        // Let every request through.
        for _ in 0..1000 {
            gate.notify_waiters();
            tokio::task::yield_now().await;
            if queued.iter().all(|q| q.is_finished()) {
                break;
            }
        }
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap(), vec![None]);
        }
        for q in queued {
            let (i, got) = q.await.unwrap();
            let got = got.unwrap();
            assert_eq!(got.len(), 5);
            for (j, o) in got.iter().enumerate() {
                assert_eq!(o.is_some(), j == i % 5, "call {i} item {j}: {o:?}");
            }
        }
        let sizes = lane.post.sizes.lock().unwrap().clone();
        assert_eq!(sizes.len(), REQUESTS_IN_FLIGHT + 1, "requests: {sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), REQUESTS_IN_FLIGHT + 50);
    }

    #[tokio::test]
    async fn a_request_takes_whole_calls_up_to_the_item_cap() {
        let mut queue = VecDeque::new();
        for (id, n) in [(0, MAX_ITEMS + 1), (1, 10), (2, MAX_ITEMS - 10), (3, 1)] {
            let (tx, _) = oneshot::channel();
            let mut p = part(&[]);
            p.items = n;
            queue.push_back(Entry {
                id,
                part: p,
                reply: tx,
            });
        }
        let ids = |v: Vec<Entry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        // A call over the cap goes alone; the next two fill a request exactly.
        assert_eq!(ids(take(&mut queue)), vec![0]);
        assert_eq!(ids(take(&mut queue)), vec![1, 2]);
        assert_eq!(ids(take(&mut queue)), vec![3]);
        assert!(take(&mut queue).is_empty());
    }

    #[tokio::test]
    async fn a_call_abandoned_while_queued_is_not_sent_and_the_rest_go_on() {
        let (lane, gate, calls) = held().await;
        let abandoned = {
            let lane = lane.clone();
            tokio::spawn(async move { submit(&lane, part(&vec![json!({}); 7])).await })
        };
        let kept = {
            let lane = lane.clone();
            tokio::spawn(async move { submit(&lane, part(&vec![json!({}); 3])).await })
        };
        while lane.lock().len() < 2 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        assert_eq!(lane.lock().len(), 1, "the abandoned call left the queue");
        for _ in 0..1000 {
            gate.notify_waiters();
            tokio::task::yield_now().await;
            if kept.is_finished() {
                break;
            }
        }
        assert_eq!(kept.await.unwrap().unwrap(), vec![None; 3]);
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let sizes = lane.post.sizes.lock().unwrap().clone();
        assert!(!sizes.contains(&7), "requests: {sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), REQUESTS_IN_FLIGHT + 3);
    }
}
