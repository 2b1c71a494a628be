use super::*;

fn rules(config_dir: Option<PathBuf>, features: Features) -> (Arc<Rules>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let procfs = Procfs::default();
    let context = Context {
        memory: Arc::new(Memory::new(procfs.clone(), None)),
        procfs,
        proc_root: PathBuf::from("/proc"),
        cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        captures: Arc::new(tokio::sync::Semaphore::new(4)),
        probes: Arc::new(tokio::sync::Semaphore::new(8)),
        dump_dir: dir.path().join("dumps"),
        wake: Arc::default(),
        lttng: None,
        features,
        pod: None,
        config_dir,
    };
    let store = Store::open(&dir.path().join("artifacts"), 1 << 20).unwrap();
    (Rules::new(context, Arc::new(store)), dir)
}

const CPU: &str =
    "{name: hot, trigger: {cpu: {above_percent: 90}}, filter: {pid: 1}, actions: [{profile: {}}]}";

#[test]
fn api_rules_are_added_all_or_none_and_removed() {
    let (rules, _dir) = rules(None, Features::all());
    assert_eq!(rules.add(CPU).unwrap()[0].name, "hot");
    assert!(matches!(rules.add(CPU), Err(RulesError::Exists(_))));
    // One bad rule of two: neither is added.
    let two = "[{name: a, trigger: {oom_kill: {}}, actions: []}, {name: hot, trigger: {oom_kill: {}}, actions: []}]";
    assert!(matches!(rules.add(two), Err(RulesError::Exists(_))));
    assert_eq!(rules.list().len(), 1);
    assert!(matches!(rules.remove("nope"), Err(RulesError::NotFound(_))));
    rules.remove("hot").unwrap();
    assert!(rules.list().is_empty());
    let many: Vec<String> = (0..=spec::MAX_RULES)
        .map(|i| format!("{{name: r{i}, trigger: {{oom_kill: {{}}}}, actions: []}}"))
        .collect();
    assert!(matches!(
        rules.add(&format!("[{}]", many.join(","))),
        Err(RulesError::TooMany(33))
    ));
    // An action the agent does not serve.
    let (profile_only, _dir) = super::tests::rules(None, Features::none().with(Feature::Profile));
    let dump = "{name: d, trigger: {oom_kill: {}}, actions: [{dump: {}}]}";
    assert!(matches!(
        profile_only.add(dump),
        Err(RulesError::Feature {
            feature: Feature::Dump,
            ..
        })
    ));
    let thrown = "{name: e, trigger: {exception: {type: X}}, actions: [{profile: {}}]}";
    assert!(matches!(
        profile_only.add(thrown),
        Err(RulesError::Feature {
            feature: Feature::Dotnet,
            ..
        })
    ));
}

#[test]
fn the_configmaps_rules_follow_its_files() {
    let config = tempfile::tempdir().unwrap();
    // As the kubelet writes a ConfigMap: keys are links into ..data.
    let data = config.path().join("..2026_12_07_01_00_00.1");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::symlink(&data, config.path().join("..data")).unwrap();
    std::fs::write(data.join("cpu.yaml"), CPU).unwrap();
    std::fs::write(
        data.join("bad.yaml"),
        "{name: b, trigger: {cpu: {}}, actions: []}",
    )
    .unwrap();
    for key in ["cpu.yaml", "bad.yaml"] {
        std::os::unix::fs::symlink(format!("..data/{key}"), config.path().join(key)).unwrap();
    }
    let (rules, _dir) = rules(Some(config.path().to_owned()), Features::all());
    rules
        .add("{name: mine, trigger: {oom_kill: {}}, actions: []}")
        .unwrap();
    rules.reload_config();
    let report = rules.report();
    let names: Vec<(&str, &str)> = report
        .rules
        .iter()
        .map(|r| (r.name.as_str(), r.source.as_str()))
        .collect();
    assert_eq!(names, [("mine", "api"), ("hot", "configmap:cpu.yaml")]);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(
        report.errors[0].starts_with("bad.yaml: trigger.cpu"),
        "{:?}",
        report.errors
    );
    assert!(matches!(
        rules.remove("hot"),
        Err(RulesError::FromConfigMap { .. })
    ));
    // Unchanged files: nothing is replaced, the tally stays.
    crate::sync::lock(&rules.state).entries[1].tally.fired = 7;
    rules.reload_config();
    assert_eq!(rules.report().rules[1].tally.fired, 7);
    // A rule named like an API rule is reported, not put in force.
    std::fs::write(
        data.join("bad.yaml"),
        "{name: mine, trigger: {oom_kill: {}}, actions: []}",
    )
    .unwrap();
    rules.reload_config();
    let report = rules.report();
    assert_eq!(report.rules.len(), 2);
    assert!(
        report.errors[0].contains("a rule named \"mine\" is in force already"),
        "{:?}",
        report.errors
    );
    // The key removed: its rule goes; the other's tally stays.
    std::fs::remove_file(config.path().join("bad.yaml")).unwrap();
    std::fs::write(data.join("cpu.yaml"), CPU.replace("90", "95")).unwrap();
    rules.reload_config();
    let report = rules.report();
    assert!(report.errors.is_empty());
    assert_eq!(report.rules[1].trigger, "cpu > 95 % for 0 s");
    assert_eq!(
        report.rules[1].tally.fired, 0,
        "a changed rule starts afresh"
    );
}
