//! Who may use the shared gateway: many scenarios at once, or one exclusive scenario alone.
//!
//! The gateway-wide series (`tigera_waf_transactions_total`) count every request any scenario
//! sends, and on a cluster the install's route probes too. An exclusive scenario asserts them
//! exactly, so from its baseline scrape to its confirming scrape nothing else may reach the gateway.
//! Nothing else has to wait: installs that send no request, audit waits, backend-reach checks,
//! diagnostics and removals run beside the window. The gate covers exactly the parts that send
//! requests (install and traffic) for everyone, and the counted window for an exclusive scenario.
//!
//! The isolated scenarios' traffic goes first: an exclusive window opens only once every isolated
//! scenario of the run has sent its traffic (or ended without), so the windows, one after another,
//! overlap the isolated scenarios' scrapes and audit waits instead of holding up their traffic.
//! Among exclusive scenarios, waiters are served in the order they asked (tokio's `RwLock` is
//! fair), and a window is bounded by its scenario's own deadline, since the guard is dropped with
//! the scenario's future.

use std::time::{Duration, Instant};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The run's one gate in front of the gateway.
#[derive(Debug)]
pub struct GatewayGate {
    lock: RwLock<()>,
    /// When the last use that sent requests ended (`None`: nothing sent through the gate yet).
    quiet_since: std::sync::Mutex<Option<Instant>>,
    /// How many isolated scenarios have yet to send their traffic (see [`GatewayGate::promise`]).
    to_come: tokio::sync::watch::Sender<usize>,
}

impl Default for GatewayGate {
    fn default() -> Self {
        GatewayGate { lock: RwLock::default(), quiet_since: std::sync::Mutex::default(), to_come: tokio::sync::watch::Sender::new(0) }
    }
}

/// An isolated scenario's traffic still to come: exclusive windows wait until every promise is
/// dropped (the traffic sent, or the scenario ended without sending it).
#[derive(Debug)]
pub struct Promise<'a> {
    gate: &'a GatewayGate,
}

impl Drop for Promise<'_> {
    fn drop(&mut self) {
        self.gate.to_come.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Held while a scenario sends requests to the gateway (install probes, traffic); records the end.
#[derive(Debug)]
pub struct Sending<'a> {
    gate: &'a GatewayGate,
    /// `None` inside the scenario's own exclusive window.
    _shared: Option<RwLockReadGuard<'a, ()>>,
    /// The promise this traffic keeps, released with it.
    _promise: Option<Promise<'a>>,
}

/// Held by an exclusive scenario from before its baseline scrape until after its confirming scrape.
#[derive(Debug)]
pub struct ExclusiveUse<'a> {
    gate: &'a GatewayGate,
    _guard: RwLockWriteGuard<'a, ()>,
    acquired: Instant,
}

impl GatewayGate {
    /// Waits until no exclusive window is open or queued ahead, then shares the gateway; returns
    /// the guard and how long the wait took.
    pub async fn shared(&self) -> (Sending<'_>, Duration) {
        let asked = Instant::now();
        let guard = self.lock.read().await;
        (Sending { gate: self, _shared: Some(guard), _promise: None }, asked.elapsed())
    }

    /// Registers an isolated scenario whose traffic exclusive windows wait for. Taken for every
    /// isolated scenario before any scenario starts, so no window can open ahead of one.
    pub fn promise(&self) -> Promise<'_> {
        self.to_come.send_modify(|n| *n += 1);
        Promise { gate: self }
    }

    /// Waits until every promised traffic has been sent and every scenario ahead has stopped using
    /// the gateway, then holds it alone; returns the guard and how long the wait took.
    pub async fn exclusive(&self) -> (ExclusiveUse<'_>, Duration) {
        let asked = Instant::now();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = self.to_come.subscribe().wait_for(|n| *n == 0).await;
        let guard = self.lock.write().await;
        (ExclusiveUse { gate: self, _guard: guard, acquired: Instant::now() }, asked.elapsed())
    }

    fn sent_until(&self, ended: Instant) {
        let mut quiet = self.quiet_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *quiet = Some(quiet.map_or(ended, |q| q.max(ended)));
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        // Recorded before the guard is released (fields drop after this), so a window that opens
        // next always sees this use's end.
        self.gate.sent_until(Instant::now());
    }
}

impl ExclusiveUse<'_> {
    /// How long nothing has reached the gateway through the gate, as of now: every scrape that
    /// began within it saw every request sent before (`None`: nothing was sent in this run, so the
    /// quiet time is unknown). Only meaningful inside the window, where no one else can send.
    pub fn quiet_for(&self) -> Option<Duration> {
        let quiet = self.gate.quiet_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        quiet.map(|q| q.elapsed())
    }

    /// Ends the window; returns how long it was held.
    pub fn release(self) -> Duration {
        self.acquired.elapsed()
    }
}

/// The gateway as one scenario uses it: through the run's gate.
#[derive(Debug)]
pub struct GateUse<'a> {
    /// The run's gate.
    pub gate: &'a GatewayGate,
    /// Whether the scenario holds the gateway alone from its baseline to its confirming scrape.
    pub exclusive: bool,
    /// An isolated scenario's promise of traffic, kept until its traffic is sent.
    pub promise: Option<Promise<'a>>,
}

impl<'a> GateUse<'a> {
    /// How `scenario` uses `gate`; an isolated one promises its traffic at once.
    pub fn of(gate: &'a GatewayGate, exclusive: bool) -> GateUse<'a> {
        GateUse { gate, exclusive, promise: (!exclusive).then(|| gate.promise()) }
    }

    /// Shares the gateway for sending the traffic, unless this scenario already holds it alone
    /// (`window` is `Some`): then the wait is zero and only the end of the sending is recorded.
    /// The returned guard keeps the promise until the traffic is sent.
    pub async fn send(self, window: &Option<ExclusiveUse<'_>>) -> (Sending<'a>, Duration) {
        if window.is_some() {
            return (Sending { gate: self.gate, _shared: None, _promise: self.promise }, Duration::ZERO);
        }
        let (mut sending, waited) = self.gate.shared().await;
        sending._promise = self.promise;
        (sending, waited)
    }

    /// Opens this scenario's exclusive window, when it is exclusive.
    pub async fn window(&self) -> (Option<ExclusiveUse<'a>>, Duration) {
        if !self.exclusive {
            return (None, Duration::ZERO);
        }
        let (guard, waited) = self.gate.exclusive().await;
        (Some(guard), waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn scenarios_share_the_gateway_with_each_other() {
        let gate = GatewayGate::default();
        let (_a, _) = gate.shared().await;
        let (_b, waited) = tokio::time::timeout(Duration::from_secs(5), gate.shared()).await.expect("a second sharer gets in at once");
        assert!(waited < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn an_exclusive_window_waits_for_the_traffic_already_running_and_keeps_new_traffic_out() {
        let gate = Arc::new(GatewayGate::default());
        let (sending, _) = gate.shared().await;
        let (opened_tx, mut opened) = tokio::sync::oneshot::channel();
        let (close_tx, close) = tokio::sync::oneshot::channel::<()>();
        let exclusive = tokio::spawn({
            let gate = gate.clone();
            async move {
                let (window, _) = gate.exclusive().await;
                opened_tx.send(()).ok();
                close.await.ok();
                window.release();
            }
        });
        let settle = || async {
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
        };
        settle().await;
        assert!(opened.try_recv().is_err(), "the window opened while another scenario was sending");
        // A scenario asking to send after the exclusive one queued waits behind its window (fair order).
        let late = tokio::spawn({
            let gate = gate.clone();
            async move { gate.shared().await.1 }
        });
        settle().await;
        assert!(!late.is_finished(), "a new sharer overtook the queued exclusive window");
        drop(sending);
        settle().await;
        assert!(opened.try_recv().is_ok(), "the window did not open once the traffic ended");
        assert!(!late.is_finished(), "a sharer got in while the window was open");
        close_tx.send(()).ok();
        exclusive.await.expect("exclusive task");
        tokio::time::timeout(Duration::from_secs(5), late).await.expect("the sharer gets in after the window").expect("task");
    }

    #[tokio::test]
    async fn exclusive_windows_never_overlap() {
        let gate = Arc::new(GatewayGate::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (gate, inside, most) = (gate.clone(), inside.clone(), most.clone());
                tokio::spawn(async move {
                    let (window, _) = gate.exclusive().await;
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    window.release();
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_scenario_inside_its_own_window_sends_without_asking_again() {
        let gate = GatewayGate::default();
        let use_ = GateUse::of(&gate, true);
        let (window, _) = use_.window().await;
        let (sending, waited) = tokio::time::timeout(Duration::from_secs(5), use_.send(&window)).await.expect("no self-deadlock");
        assert_eq!(waited, Duration::ZERO);
        assert_eq!(window.as_ref().and_then(ExclusiveUse::quiet_for), None, "nothing sent yet");
        drop(sending);
        assert!(window.as_ref().and_then(ExclusiveUse::quiet_for).is_some(), "the window's own traffic is recorded");
    }

    #[tokio::test]
    async fn exclusive_windows_open_only_after_every_isolated_scenario_sent_its_traffic() {
        let gate = Arc::new(GatewayGate::default());
        let isolated = GateUse::of(&gate, false);
        let ended_early = GateUse::of(&gate, false);
        let window = tokio::spawn({
            let gate = gate.clone();
            async move { gate.exclusive().await.1 }
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!window.is_finished(), "a window opened before the isolated traffic was sent");
        drop(ended_early);
        let (sending, _) = isolated.send(&None).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!window.is_finished(), "a window opened while isolated traffic was being sent");
        drop(sending);
        tokio::time::timeout(Duration::from_secs(5), window).await.expect("the window opens once the traffic is sent").expect("task");
    }

    #[tokio::test]
    async fn a_window_knows_how_long_the_gateway_has_been_quiet_since_the_last_sender() {
        let gate = GatewayGate::default();
        let (sending, _) = gate.shared().await;
        let (window, _) = {
            drop(sending);
            gate.exclusive().await
        };
        let quiet = window.quiet_for().expect("a use ended before the window");
        assert!(quiet < Duration::from_secs(60), "{quiet:?}");
    }
}
