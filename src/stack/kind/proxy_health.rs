//! Whether the Gateway's proxies stayed up during the run.
//!
//! An `envoy` container that restarted since the stack came up ends the scenarios running (the
//! runner polls `Stack::health`) with how it ended, instead of letting each time out on a gateway
//! that answers 503. A crash (SIGSEGV, SIGABRT, SIGBUS, SIGILL, SIGFPE, SIGTRAP) is the proxy's own
//! failure, so it is a [`BrokenResource`] naming the proxy pod (a failed verdict); any other end
//! (SIGKILL from the OOM killer, an exit code) is the infrastructure's. A SIGSEGV gets the one cause measured on this project's
//! machine: V8 and memory protection keys (docs/local-envoy.md).

use crate::error::BrokenResource;
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;

/// The container Envoy Gateway runs Envoy in.
const ENVOY_CONTAINER: &str = "envoy";

/// Exit codes from 129 up are 128 + the signal that ended the process.
const SIGNAL_EXIT_BASE: i32 = 128;

/// The signals a process gets for its own fault: SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV.
const CRASH_SIGNALS: [i32; 6] = [4, 5, 6, 7, 8, 11];

/// The restart count of each pod's `envoy` container, by `namespace/name`.
pub fn envoy_restarts(pods: &[Pod]) -> BTreeMap<String, i32> {
    pods.iter().filter_map(|p| Some((pod_name(p), envoy_status(p)?.restart_count))).collect()
}

/// Why the run cannot go on, if an Envoy restarted since `baseline` ([`envoy_restarts`] when the
/// stack came up): `Err(BrokenResource)` for a crash by signal, `Err(other)` for any other end.
pub fn check(pods: &[Pod], baseline: &BTreeMap<String, i32>) -> anyhow::Result<()> {
    for pod in pods {
        let Some(status) = envoy_status(pod) else { continue };
        let name = pod_name(pod);
        let before = baseline.get(&name).copied().unwrap_or(0);
        if status.restart_count <= before {
            continue;
        }
        let ended = status.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        let exit_code = ended.map(|t| t.exit_code);
        let signal = ended.and_then(|t| t.signal).or(exit_code.filter(|c| *c > SIGNAL_EXIT_BASE).map(|c| c - SIGNAL_EXIT_BASE));
        let how = match ended {
            Some(t) => format!(
                "exit code {}{}{}",
                t.exit_code,
                signal.map(|s| format!(" (signal {s}{})", signal_name(s))).unwrap_or_default(),
                t.reason.as_deref().map(|r| format!(", reason {r}")).unwrap_or_default()
            ),
            None => "an end the API server did not record".to_string(),
        };
        let problem = format!("its `envoy` container restarted during the run ({before} -> {} restarts); it ended with {how}", status.restart_count);
        return match signal.filter(|s| CRASH_SIGNALS.contains(s)) {
            Some(s) => {
                let hint = if s == 11 {
                    "; a SIGSEGV on the first request through a wasm filter is what Envoy's V8 does on CPUs with memory \
                     protection keys (pku) when the pod's seccomp profile allows pkey_alloc (docs/local-envoy.md)"
                } else {
                    ""
                };
                Err(BrokenResource { resource: format!("proxy pod {name}"), problem: format!("{problem}{hint}") }.into())
            }
            None => Err(anyhow::anyhow!("proxy pod {name}: {problem}")),
        };
    }
    Ok(())
}

fn envoy_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == ENVOY_CONTAINER)
}

fn pod_name(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or("default"), pod.metadata.name.as_deref().unwrap_or("(unnamed)"))
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        6 => " SIGABRT",
        9 => " SIGKILL",
        11 => " SIGSEGV",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(restarts: i32, last_terminated: Option<serde_json::Value>) -> Pod {
        let mut status = json!({"name": "envoy", "image": "envoy", "imageID": "", "ready": true, "restartCount": restarts});
        if let Some(t) = last_terminated {
            status["lastState"] = json!({"terminated": t});
        }
        serde_json::from_value(json!({
            "metadata": {"name": "envoy-waf-e2e-gw-1", "namespace": "envoy-gateway-system"},
            "status": {"containerStatuses": [{"name": "shutdown-manager", "image": "eg", "imageID": "", "ready": true, "restartCount": 7}, status]},
        }))
        .unwrap()
    }

    #[test]
    fn a_proxy_that_did_not_restart_is_healthy_whatever_its_other_containers_did() {
        let pods = [pod(2, None)];
        let baseline = envoy_restarts(&pods);
        assert_eq!(baseline, BTreeMap::from([("envoy-gateway-system/envoy-waf-e2e-gw-1".to_string(), 2)]));
        check(&pods, &baseline).unwrap();
    }

    #[test]
    fn an_envoy_that_segfaulted_is_a_broken_proxy_with_the_memory_protection_keys_hint() {
        let baseline = envoy_restarts(&[pod(0, None)]);
        let err = check(&[pod(1, Some(json!({"exitCode": 139, "reason": "Error"})))], &baseline).unwrap_err();
        let broken = BrokenResource::find(&err).unwrap_or_else(|| panic!("not a broken resource: {err:#}"));
        assert_eq!(broken.resource, "proxy pod envoy-gateway-system/envoy-waf-e2e-gw-1");
        assert!(broken.problem.contains("0 -> 1 restarts") && broken.problem.contains("exit code 139 (signal 11 SIGSEGV), reason Error"), "{}", broken.problem);
        assert!(broken.problem.contains("memory protection keys"), "{}", broken.problem);
    }

    #[test]
    fn an_oom_killed_envoy_is_infrastructure_not_the_proxys_fault() {
        let baseline = envoy_restarts(&[pod(0, None)]);
        let err = check(&[pod(1, Some(json!({"exitCode": 137, "reason": "OOMKilled"})))], &baseline).unwrap_err();
        assert!(BrokenResource::find(&err).is_none(), "SIGKILL comes from outside: {err:#}");
        let text = format!("{err:#}");
        assert!(text.contains("signal 9 SIGKILL") && text.contains("reason OOMKilled"), "{text}");
        assert!(!text.contains("memory protection keys"), "{text}");
    }

    #[test]
    fn an_abort_is_a_broken_proxy_without_the_segfault_hint() {
        let baseline = envoy_restarts(&[pod(3, None)]);
        let err = check(&[pod(4, Some(json!({"exitCode": 134, "reason": "Error"})))], &baseline).unwrap_err();
        let broken = BrokenResource::find(&err).unwrap_or_else(|| panic!("not a broken resource: {err:#}"));
        assert!(broken.problem.contains("3 -> 4 restarts") && broken.problem.contains("signal 6 SIGABRT"), "{}", broken.problem);
        assert!(!broken.problem.contains("memory protection keys"), "{}", broken.problem);
    }

    #[test]
    fn an_envoy_that_exited_without_a_signal_is_infrastructure() {
        let baseline = envoy_restarts(&[pod(0, None)]);
        let err = check(&[pod(1, Some(json!({"exitCode": 1, "reason": "Error"})))], &baseline).unwrap_err();
        assert!(BrokenResource::find(&err).is_none(), "{err:#}");
        assert!(format!("{err:#}").contains("proxy pod envoy-gateway-system/envoy-waf-e2e-gw-1: its `envoy` container restarted"), "{err:#}");
    }
}
