use super::*;

fn one(text: &str) -> Rule {
    let mut rules = parse(text).unwrap();
    assert_eq!(rules.len(), 1);
    rules.remove(0)
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().message
}

#[test]
fn reads_yaml_and_json_with_defaults() {
    let rule = one(
        "name: hot\ntrigger: {cpu: {above_percent: 80, for_seconds: 3}}\nfilter: {name: dotnet, runtime: dotnet}\nactions:\n  - profile: {mode: cpu, seconds: 5, format: pprof, hz: 49}\n  - dump: {type: mini}\n",
    );
    assert_eq!(rule.name, "hot");
    assert_eq!(
        rule.trigger,
        Trigger::Cpu {
            above_percent: 80.0,
            for_seconds: 3
        }
    );
    assert_eq!(rule.filter.name.as_deref(), Some("dotnet"));
    assert_eq!(rule.filter.runtime, Some(Runtime::Dotnet));
    assert_eq!(rule.filter.container, None);
    let web = one("{name: w, trigger: {oom_kill: {}}, actions: [], filter: {container: web-1}}");
    assert_eq!(web.filter.container.as_deref(), Some("web-1"));
    assert_eq!(rule.limits, Limits::default());
    let Action::Profile(profile) = &rule.actions[0] else {
        panic!("{:?}", rule.actions)
    };
    assert_eq!((profile.seconds, profile.hz), (5, 49));
    assert_eq!(
        rule.actions[0].describe(),
        "profile mode=cpu seconds=5 → profile.pb.gz"
    );
    assert_eq!(
        rule.actions[1].describe(),
        "dump type=mini limit_mb=4096 → core.PID"
    );
    let json = one(
        r#"{"name": "m", "trigger": {"memory": {"above_percent": 90}}, "actions": [{"dump": {}}], "limits": {"max_actions": 1, "cooldown_seconds": 0}}"#,
    );
    assert_eq!(
        json.trigger,
        Trigger::Memory {
            above_percent: 90.0
        }
    );
    assert_eq!(
        (
            json.limits.max_actions,
            json.limits.cooldown_seconds,
            json.limits.window_seconds
        ),
        (1, 0, 3600)
    );
    assert_eq!(json.document["trigger"]["memory"]["above_percent"], 90);
    let many = parse(
        "- {name: a, trigger: {oom_kill: {}}, actions: []}\n- {name: b, trigger: {pressure: {resource: memory, above_percent: 10}}, actions: [{profile: {}}]}\n",
    )
    .unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(many[0].trigger, Trigger::OomKill);
    assert!(many[1].trigger.per_cgroup() && !rule.trigger.per_cgroup());
}

#[test]
fn errors_name_the_field() {
    let base = |trigger: &str, actions: &str| {
        format!("{{name: r, trigger: {trigger}, actions: {actions}}}")
    };
    let cases = [
        (
            base("{cpu: {above_percent: 0}}", "[{profile: {}}]"),
            "trigger.cpu.above_percent=0",
        ),
        (
            base("{cpu: {above_percent: lots}}", "[{profile: {}}]"),
            "trigger.cpu.above_percent",
        ),
        (base("{cpu: {above: 3}}", "[{profile: {}}]"), "trigger.cpu"),
        (base("{disk: {}}", "[{profile: {}}]"), "trigger"),
        (
            base("{memory: {above_percent: 101}}", "[{profile: {}}]"),
            "trigger.memory.above_percent=101",
        ),
        (
            base(
                "{pressure: {resource: net, above_percent: 5}}",
                "[{profile: {}}]",
            ),
            "trigger.pressure.resource",
        ),
        (base("{cpu: {above_percent: 5}}", "[]"), "actions is empty"),
        (
            base("{cpu: {above_percent: 5}}", "[{profile: {hz: 0}}]"),
            "actions[0].profile: hz=0",
        ),
        (
            base(
                "{cpu: {above_percent: 5}}",
                "[{profile: {}}, {dump: {type: huge}}]",
            ),
            "actions[1].dump: type=\"huge\"",
        ),
        (
            base("{cpu: {above_percent: 5}}", "[{profile: {bogus: 1}}]"),
            "actions[0].profile: unknown parameter \"bogus\"",
        ),
        (
            base("{cpu: {above_percent: 5}}", "[{profile: {pid: 3}}]"),
            "actions[0].profile.pid is set",
        ),
        (
            base("{cpu: {above_percent: 5}}", "[{lttng: {}}]"),
            "actions[0]: \"lttng\" is not an action",
        ),
        (
            base("{cpu: {above_percent: 5}}", "[{profile: {}, dump: {}}]"),
            "actions[0] must name exactly one action",
        ),
    ];
    for (text, wanted) in cases {
        let message = error(&text);
        assert!(message.contains(wanted), "{text}: {message}");
    }
    assert!(error("{name: 'a b', trigger: {oom_kill: {}}, actions: []}").contains("name="));
    assert!(
        error("{name: r, trigger: {oom_kill: {}}, actions: [], filter: {uid: 0}}")
            .contains("filter")
    );
    assert!(
        error("{name: r, trigger: {oom_kill: {}}, actions: [], limits: {max_actions: 0}}")
            .contains("limits.max_actions=0")
    );
    assert!(
        error("{name: r, trigger: {oom_kill: {}}, actions: [], filter: {runtime: cobol}}")
            .contains("filter.runtime")
    );
    assert!(
        error("{name: r, trigger: {oom_kill: {}}, actions: [], filter: {container: Web}}")
            .contains("filter.container=\"Web\" is not a container name")
    );
    assert!(error("[{name: r, trigger: {oom_kill: {}}, actions: []}, {name: r, trigger: {oom_kill: {}}, actions: []}]").contains("two rules are named \"r\""));
    assert!(
        error(
            "[{name: r, trigger: {oom_kill: {}}, actions: []}, {name: s, trigger: {oom_kill: {}}}]"
        )
        .starts_with("[1].")
    );
    assert!(error("[]").contains("empty"));
    let crash = |signals: &str, actions: &str| {
        format!("{{name: c, trigger: {{signal: {{{signals}}}}}, actions: {actions}}}")
    };
    assert!(
        error(&crash("signals: [SIGKILL]", "[{dump: {}}]"))
            .contains("trigger.signal.signals=\"SIGKILL\" is not a fatal signal")
    );
    assert!(
        error(&crash("", "[{profile: {}}]")).contains("actions[0] cannot run at a fatal signal")
    );
    assert!(error(&crash("", "[]")).contains("actions is empty"));
    let rule = one(&crash("signals: [segv, SIGABRT]", "[{dump: {type: mini}}]"));
    let Trigger::Signal { signals } = rule.trigger else {
        panic!("{:?}", rule.trigger)
    };
    assert_eq!(signals, (1 << 10) | (1 << 5));
    assert_eq!(
        rule.trigger.describe(),
        "a fatal SIGSEGV or SIGABRT (stopped there, and let die after the actions)"
    );
    assert!(!rule.trigger.per_cgroup());
    let Trigger::Signal { signals: all } = one(&crash("", "[{dump: {}}]")).trigger else {
        panic!()
    };
    let thrown = one(
        "{name: e, trigger: {exception: {type: InvalidOperationException}}, actions: [{profile: {}}]}",
    );
    assert_eq!(
        thrown.trigger.describe(),
        "a .NET first-chance InvalidOperationException"
    );
    assert!(
        error("{name: e, trigger: {exception: {type: ''}}, actions: [{profile: {}}]}")
            .contains("trigger.exception.type")
    );
    assert!(
        error("{name: e, trigger: {exception: {}}, actions: [{profile: {}}]}")
            .contains("trigger.exception")
    );
    let counter = one(
        "{name: c, trigger: {counter: {name: 'http.server.request.duration{route=/a}', provider: Web, quantile: 0.99, above: 0.5}}, actions: [{profile: {}}]}",
    );
    assert_eq!(
        counter.trigger.describe(),
        "Web http.server.request.duration{route=/a} p99 ≥ 0.5 over 1 s"
    );
    let heap = one(
        "{name: c, trigger: {counter: {name: gc-heap-size, above: 500, interval: 5}}, actions: [{profile: {}}]}",
    );
    assert_eq!(
        heap.trigger.describe(),
        "System.Runtime gc-heap-size ≥ 500 over 5 s"
    );
    assert!(error("{name: c, trigger: {counter: {name: x, above: 1, quantile: 0.9}}, actions: [{profile: {}}]}").contains("trigger.counter.quantile=0.9"));
    assert!(error("{name: c, trigger: {counter: {name: x, above: 1, interval: 0}}, actions: [{profile: {}}]}").contains("trigger.counter.interval=0"));
    assert!(
        error("{name: c, trigger: {counter: {name: x}}, actions: [{profile: {}}]}")
            .contains("trigger.counter")
    );
    assert_eq!(all.count_ones(), 5);
    let slow = one(
        "{name: s, trigger: {latency: {symbol: malloc, module: libc.so.6, above_ms: 2.5}}, actions: [{profile: {}}]}",
    );
    assert_eq!(
        slow.trigger.describe(),
        "a call of malloc in libc.so.6 of 2.5 ms or more"
    );
    assert_eq!(slow.trigger.feature(), Some(Feature::Uprobe));
    assert!(
        error("{name: s, trigger: {latency: {symbol: f, above_ms: -1}}, actions: [{profile: {}}]}")
            .contains("trigger.latency.above_ms=-1")
    );
    assert!(
        error("{name: s, trigger: {latency: {symbol: '', above_ms: 1}}, actions: [{profile: {}}]}")
            .starts_with("trigger.latency: ")
    );
    assert!(error("name: [").contains("not YAML or JSON"));
    assert!(error(&"#".repeat(MAX_DOCUMENT_BYTES + 1)).contains("bytes"));
}

/// Every rule docs/api/rules.md shows is one the agent takes.
#[test]
fn the_documented_rules_parse() {
    let doc = include_str!("../../../../docs/api/rules.md");
    let blocks: Vec<&str> = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .collect();
    assert!(blocks.len() >= 5, "{}", blocks.len());
    for block in blocks {
        if let Err(e) = parse(block) {
            panic!("{block}\n→ {}: {}", e.message, e.hint);
        }
    }
}
