//! The scenarios' routes on the local Envoy, with concurrent changes coalesced into one update.
//!
//! Every Envoy update rewrites the whole listener and waits until Envoy applied it (a few hundred
//! milliseconds under load). Applied one change at a time, 50 scenarios starting together queued
//! 50 installs and then 50 removals behind one lock: installs took up to 3.7 s each (measured).
//! Here a change joins a queue; whoever finds no update in progress applies everything queued in
//! ONE update, and every change in it returns with that update's result. Changes that arrive
//! meanwhile go together into the next update.
//!
//! A refused update is retried one change at a time, so only the change Envoy refuses fails (its
//! error carries Envoy's reason) and the others are applied as if alone.

use crate::envoy::RouteSpec;
use anyhow::{anyhow, Result};
use std::collections::BTreeMap;
use std::future::Future;

/// How many times an update yields to let changes made at the same moment join it (it stops as soon
/// as one yield brings none: scheduling rounds, not time).
const GATHER_ROUNDS: usize = 16;

/// One change to the installed routes, keyed by scenario name.
#[derive(Debug, Clone)]
pub(super) enum Change {
    /// Install (or replace) the route of a scenario.
    Put(String, RouteSpec),
    /// Remove the route of a scenario (nothing when it has none).
    Remove(String),
}

impl Change {
    fn apply_to(&self, routes: &mut BTreeMap<String, RouteSpec>) {
        match self {
            Change::Put(name, route) => {
                routes.insert(name.clone(), route.clone());
            }
            Change::Remove(name) => {
                routes.remove(name);
            }
        }
    }
}

/// What the table holds between updates.
#[derive(Default)]
struct State {
    /// The routes of the last update Envoy applied (a refused removal is left out all the same, as
    /// the scenario is gone: the next update removes it).
    routes: BTreeMap<String, RouteSpec>,
    /// Changes not applied yet, by ticket, oldest first.
    pending: Vec<(u64, Change)>,
    /// The last ticket handed out.
    last_ticket: u64,
    /// Results of changes applied by another caller's update, until their caller collects them.
    results: BTreeMap<u64, Result<(), String>>,
}

/// The routes installed on one Envoy; see the module documentation.
#[derive(Default)]
pub(super) struct RouteTable {
    state: std::sync::Mutex<State>,
    /// Held by the caller applying an update (and by an Envoy restart), so updates never overlap.
    updating: tokio::sync::Mutex<()>,
}

/// The table held still (no update runs) with the routes applied so far, for an Envoy restart.
pub(super) struct Held<'a> {
    _updating: tokio::sync::MutexGuard<'a, ()>,
    /// The routes the restarted Envoy must carry.
    pub routes: Vec<RouteSpec>,
}

impl RouteTable {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether scenario `name` is installed, or being installed and not removed after.
    pub fn contains(&self, name: &str) -> bool {
        let state = self.state();
        let mut routes = state.routes.clone();
        for (_, change) in &state.pending {
            change.apply_to(&mut routes);
        }
        routes.contains_key(name)
    }

    /// Makes `change` and returns once an update holding it was applied by `apply` (which receives
    /// every route and applies them to Envoy), or refused: then the error is Envoy's about this change.
    pub async fn change<A, F>(&self, change: Change, apply: A) -> Result<()>
    where
        A: Fn(Vec<RouteSpec>) -> F,
        F: Future<Output = Result<()>>,
    {
        let ticket = {
            let mut state = self.state();
            state.last_ticket += 1;
            let ticket = state.last_ticket;
            state.pending.push((ticket, change));
            ticket
        };
        let _updating = self.updating.lock().await;
        if let Some(result) = self.state().results.remove(&ticket) {
            return result.map_err(|e| anyhow!(e));
        }
        // No update took this change yet: this caller applies everything queued, its own change among it.
        self.gather().await;
        let (batch, mut routes) = {
            let state = self.state();
            (state.pending.clone(), state.routes.clone())
        };
        for (_, change) in &batch {
            change.apply_to(&mut routes);
        }
        // The batch leaves the queue only once applied: a caller dropped mid-update leaves it to the next.
        match apply(routes.values().cloned().collect()).await {
            Ok(()) => {
                self.finish(&batch, routes, batch.iter().filter(|(t, _)| *t != ticket).map(|(t, _)| (*t, Ok(()))).collect());
                Ok(())
            }
            Err(e) if batch.len() == 1 => {
                self.finish(&batch, self.without_refused(&batch), BTreeMap::new());
                Err(e)
            }
            Err(_) => self.one_at_a_time(&batch, ticket, &apply).await,
        }
    }

    /// Lets changes being made at this moment join the update: a wave of scenarios starting together
    /// are futures of one task, queued only once this caller yields. Measured with 45 scenarios
    /// starting together: without this the first went alone and the other 44 waited for it.
    async fn gather(&self) {
        let mut queued = self.state().pending.len();
        for _ in 0..GATHER_ROUNDS {
            tokio::task::yield_now().await;
            let now = self.state().pending.len();
            if now == queued {
                return;
            }
            queued = now;
        }
    }

    /// After a refused update of several changes: each change alone on top of what Envoy took, in order.
    async fn one_at_a_time<A, F>(&self, batch: &[(u64, Change)], ticket: u64, apply: &A) -> Result<()>
    where
        A: Fn(Vec<RouteSpec>) -> F,
        F: Future<Output = Result<()>>,
    {
        let mut routes = self.state().routes.clone();
        let mut results = BTreeMap::new();
        let mut own = Ok(());
        for (t, change) in batch {
            let mut next = routes.clone();
            change.apply_to(&mut next);
            let result = apply(next.values().cloned().collect()).await;
            match (&result, change) {
                (Ok(()), _) => routes = next,
                // The scenario is gone whether or not Envoy took the removal (as with a change alone).
                (Err(_), Change::Remove(name)) => {
                    routes.remove(name);
                }
                (Err(_), Change::Put(..)) => {}
            }
            if *t == ticket {
                own = result;
            } else {
                results.insert(*t, result.map_err(|e| format!("{e:#}")));
            }
        }
        self.finish(batch, routes, results);
        own
    }

    /// The applied routes after a refused single change: an install is left out, a removal is kept.
    fn without_refused(&self, batch: &[(u64, Change)]) -> BTreeMap<String, RouteSpec> {
        let mut routes = self.state().routes.clone();
        for (_, change) in batch {
            if let Change::Remove(_) = change {
                change.apply_to(&mut routes);
            }
        }
        routes
    }

    /// Records an update: the routes now applied, the batch out of the queue, the others' results.
    fn finish(&self, batch: &[(u64, Change)], routes: BTreeMap<String, RouteSpec>, results: BTreeMap<u64, Result<(), String>>) {
        let mut state = self.state();
        let done: std::collections::BTreeSet<u64> = batch.iter().map(|(t, _)| *t).collect();
        state.pending.retain(|(t, _)| !done.contains(t));
        state.routes = routes;
        state.results.extend(results);
    }

    /// Waits for any update in progress and holds the table still; the routes applied so far.
    pub async fn hold(&self) -> Held<'_> {
        let updating = self.updating.lock().await;
        let routes = self.state().routes.values().cloned().collect();
        Held { _updating: updating, routes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn route(name: &str) -> RouteSpec {
        RouteSpec { name: format!("httproute/ns/{name}/rule/0"), host: format!("{name}.test"), backend: "127.0.0.1:9".parse().unwrap(), wasm: vec![] }
    }

    /// An Envoy stand-in: counts updates, refuses any update carrying a host starting `bad`, and
    /// holds each update until `gate` lets one through (so changes can queue behind it).
    struct FakeEnvoy {
        updates: AtomicUsize,
        carried: std::sync::Mutex<Vec<Vec<String>>>,
        gate: tokio::sync::Semaphore,
    }

    impl FakeEnvoy {
        fn new(open: bool) -> Arc<FakeEnvoy> {
            let gate = tokio::sync::Semaphore::new(if open { 1000 } else { 0 });
            Arc::new(FakeEnvoy { updates: AtomicUsize::new(0), carried: Default::default(), gate })
        }

        async fn apply(&self, routes: Vec<RouteSpec>) -> Result<()> {
            self.gate.acquire().await.unwrap().forget();
            self.updates.fetch_add(1, Ordering::SeqCst);
            let hosts: Vec<String> = routes.iter().map(|r| r.host.clone()).collect();
            self.carried.lock().unwrap().push(hosts.clone());
            match hosts.iter().find(|h| h.starts_with("bad")) {
                Some(h) => anyhow::bail!("Envoy refused the listener: route {h} is bad"),
                None => Ok(()),
            }
        }
    }

    async fn put(table: &RouteTable, envoy: &FakeEnvoy, name: &str) -> Result<()> {
        table.change(Change::Put(name.into(), route(name)), |r| envoy.apply(r)).await
    }

    /// Waits (bounded) until the table holds `n` queued changes.
    async fn queued(table: &RouteTable, n: usize) {
        crate::wait::until("changes to queue", std::time::Duration::from_secs(5), || async {
            let now = table.state().pending.len();
            Ok(if now >= n { crate::wait::Check::Met(()) } else { crate::wait::Check::NotYet(format!("{now} queued")) })
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn changes_arriving_during_an_update_are_applied_together_in_the_next_one() {
        let table = RouteTable::default();
        let envoy = FakeEnvoy::new(false);
        let names = ["a", "b", "c", "d", "e", "f"];
        let all = futures::future::join_all(names.iter().map(|n| put(&table, &envoy, n)));
        let release = async {
            queued(&table, names.len()).await;
            envoy.gate.add_permits(names.len());
        };
        let (results, ()) = tokio::join!(all, release);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        // The first update carries whatever was queued when it began; everything else goes in one more at most.
        let updates = envoy.updates.load(Ordering::SeqCst);
        assert!(updates <= 2, "{updates} updates for {} changes: {:?}", names.len(), envoy.carried.lock().unwrap());
        assert!(names.iter().all(|n| table.contains(n)));
        assert_eq!(envoy.carried.lock().unwrap().last().unwrap().len(), names.len());
    }

    #[tokio::test]
    async fn changes_made_at_the_same_moment_go_to_envoy_in_one_update() {
        let table = RouteTable::default();
        let envoy = FakeEnvoy::new(true);
        let names = ["a", "b", "c", "d", "e"];
        let results = futures::future::join_all(names.iter().map(|n| put(&table, &envoy, n))).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(*envoy.carried.lock().unwrap(), [names.iter().map(|n| format!("{n}.test")).collect::<Vec<_>>()]);
    }

    #[tokio::test]
    async fn in_a_refused_batch_only_the_refused_change_fails_and_the_others_are_applied() {
        let table = RouteTable::default();
        let envoy = FakeEnvoy::new(false);
        let names = ["a", "bad-one", "c"];
        let all = futures::future::join_all(names.iter().map(|n| put(&table, &envoy, n)));
        let release = async {
            queued(&table, names.len()).await;
            envoy.gate.add_permits(100);
        };
        let (results, ()) = tokio::join!(all, release);
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        let err = format!("{:#}", results[1].as_ref().unwrap_err());
        assert!(err.contains("route bad-one.test is bad"), "{err}");
        assert!(table.contains("a") && table.contains("c") && !table.contains("bad-one"));
        // What Envoy was last given carries the two good routes and not the refused one.
        let last = envoy.carried.lock().unwrap().iter().rev().find(|c| !c.iter().any(|h| h.starts_with("bad"))).cloned().unwrap();
        assert_eq!(last, ["a.test", "c.test"]);
    }

    #[tokio::test]
    async fn a_refused_install_alone_is_its_error_and_leaves_no_route() {
        let table = RouteTable::default();
        let envoy = FakeEnvoy::new(true);
        put(&table, &envoy, "a").await.unwrap();
        let err = put(&table, &envoy, "bad").await.unwrap_err().to_string();
        assert!(err.contains("route bad.test is bad"), "{err}");
        assert!(table.contains("a") && !table.contains("bad"));
        table.change(Change::Remove("a".into()), |r| envoy.apply(r)).await.unwrap();
        assert!(!table.contains("a"));
        assert_eq!(envoy.carried.lock().unwrap().last().unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_change_whose_caller_gave_up_mid_update_is_applied_by_the_next_update() {
        let table = RouteTable::default();
        let envoy = FakeEnvoy::new(false);
        // The caller applying "a" is dropped while its update waits for Envoy.
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(50), put(&table, &envoy, "a")).await;
        assert!(gave_up.is_err(), "the update should still have been waiting");
        assert!(table.contains("a"), "a change still queued counts as installed");
        envoy.gate.add_permits(10);
        put(&table, &envoy, "b").await.unwrap();
        assert_eq!(envoy.carried.lock().unwrap().last().unwrap(), &["a.test", "b.test"]);
    }
}
