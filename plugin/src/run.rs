//! Running a command: resolve the pod, ask the agent, write or print what
//! it answers. [`crate::request`] builds the requests and reads the
//! answers, [`crate::exec`] reaches the sidecar through kubectl or podman,
//! and [`crate::output`] writes files and progress.

use crate::across;
use crate::answer;
use crate::cli::{
    ArtifactsArgs, AttachArgs, Cli, Command, CountersArgs, DotnetTraceArgs, DumpArgs,
    ExceptionsArgs, GcdumpArgs, LttngArgs, ProfileArgs, RulesCommand, StacksArgs, TraceArgs,
};
pub use crate::error::PluginError;
use crate::exec::{self, Caller};
use crate::fleet;
use crate::output::{Bar, Sink, as_is, print_rendered, terminal_safe};
use crate::request::{self, OutputFormat};
use crate::target::{self, KubeFlags};

/// Runs `cli`.
pub fn run(cli: &Cli) -> Result<(), PluginError> {
    let flags = KubeFlags {
        namespace: cli.namespace.clone(),
        context: cli.context.clone(),
    };
    let call = |raw_target: &str| -> Result<Caller<'_>, PluginError> {
        let pod = exec::resolve(cli.runtime, &flags, &target::parse(raw_target)?)?;
        let container = exec::agent_container(cli.runtime, &flags, &pod, &cli.container);
        Ok(Caller {
            cli,
            flags: flags.clone(),
            pod,
            container,
            line: None,
        })
    };
    match &cli.command {
        Command::Attach(args) => attach(cli, &flags, args)?,
        Command::Ps { target } => {
            print_rendered(&call(target)?.body("/v1/processes")?, answer::process_table);
        }
        Command::Status { target } => {
            let caller = call(target)?;
            let body = caller.body("/v1/capabilities")?;
            println!("pod {}: agent reachable", caller.pod);
            print_rendered(&body, answer::status_lines);
        }
        Command::Profile(args) => profile(cli, &flags, &call, args)?,
        Command::Trace(args) => trace(cli, &flags, &call, args)?,
        Command::Lttng(args) => lttng(&call, args)?,
        Command::DotnetTrace(args) => dotnet_trace(&call, args)?,
        Command::Counters(args) => counters(cli, &flags, &call, args)?,
        Command::Exceptions(args) => exceptions(&call, args)?,
        Command::Gcdump(args) => gcdump(&call, args)?,
        Command::Stacks(args) => stacks(&call, args)?,
        Command::Dump(args) => dump(&call, args)?,
        Command::Rules(command) => rules(&call, command)?,
        Command::Artifacts(args) => artifacts(&call, args)?,
    }
    Ok(())
}

/// `attach`.
fn attach(cli: &Cli, flags: &KubeFlags, args: &AttachArgs) -> Result<(), PluginError> {
    let AttachArgs {
        target,
        target_container,
        profile,
        features,
        image,
        timeout,
        print,
    } = args;
    let pod = exec::resolve(cli.runtime, flags, &target::parse(target)?)?;
    let options = crate::attaching::Options {
        target_container: target_container.as_deref(),
        profile: tracecar_api::security::Profile::parse(profile)
            .unwrap_or(tracecar_api::security::Profile::Minimal),
        features: *features,
        image,
        timeout: std::time::Duration::from_secs(*timeout),
        print: *print,
    };
    crate::attaching::attach(cli, flags, &pod, &options)?;
    Ok(())
}

/// `profile`.
fn profile<'a>(
    cli: &Cli,
    flags: &KubeFlags,
    call: &Call<'a>,
    args: &ProfileArgs,
) -> Result<(), PluginError> {
    let ProfileArgs {
        target,
        fleet,
        seconds,
        hz,
        pid,
        unwind,
        mode,
        min_block_us,
        state,
        rate,
        threads,
        pod_level,
        output,
    } = args;
    // The runtime's own profiles are of one process: the pod's only app
    // process unless --pid names one.
    let path = |caller: &Caller<'_>, format| -> Result<String, PluginError> {
        let pid = match (mode.as_deref(), pid) {
            (Some("alloc" | "contention"), None) => Some(pid_or_only_app(caller, None)?),
            (_, pid) => pid.clone(),
        };
        Ok(request::profile_path(
            &request::Profile {
                seconds: *seconds,
                hz: *hz,
                pid: pid.as_deref(),
                unwind: unwind.as_deref(),
                mode: mode.as_deref(),
                min_block_us: *min_block_us,
                state: state.as_deref(),
                rate: *rate,
                threads: *threads,
            },
            format,
        ))
    };
    if fleet.all {
        let pods = across::pods(cli, flags, target.as_deref(), fleet.selector.as_deref())?;
        let mode = mode.as_deref().unwrap_or("cpu");
        let flame = across::Flame {
            what: format!("{mode} profile"),
            count_name: request::weight_name(Some(mode), None),
            output,
            pod_level: *pod_level,
            bar: Bar::Seconds(*seconds),
        };
        return across::flame(cli, flags, &pods, &flame, path);
    }
    let format = format_of(
        output,
        request::profile_format(output),
        ".svg, .pprof, .pb.gz, .folded, .speedscope.json or .json",
    )?;
    let caller = call(single(target)?)?;
    caller.get(
        &path(&caller, format)?,
        Sink::File(output),
        Bar::Seconds(*seconds),
    )?;
    eprintln!("wrote {output}");
    Ok(())
}

/// `trace`.
fn trace<'a>(
    cli: &Cli,
    flags: &KubeFlags,
    call: &Call<'a>,
    args: &TraceArgs,
) -> Result<(), PluginError> {
    let TraceArgs {
        target,
        fleet,
        symbol,
        address,
        module,
        args,
        ret,
        pid,
        seconds,
        limit,
        stack,
        unwind,
        abi,
        output,
        of,
        pod_level,
        json,
    } = args;
    let path = |caller: &Caller<'_>, flame: Option<OutputFormat>| -> Result<String, PluginError> {
        let pid = pid_or_only_app(caller, pid.as_deref())?;
        Ok(request::trace_path(&request::Trace {
            symbol: symbol.as_deref(),
            address: address.as_deref(),
            module: module.as_deref(),
            args: args.as_deref(),
            ret: ret.as_deref(),
            pid: &pid,
            seconds: *seconds,
            limit: *limit,
            stack: *stack,
            unwind: unwind.as_deref(),
            abi: abi.as_deref(),
            flame: flame.map(|format| (format, of.as_str())),
        }))
    };
    let name = symbol.as_deref().or(address.as_deref()).unwrap_or_default();
    let pretty = |line: &str| answer::trace_line(name, line);
    if fleet.all {
        let pods = across::pods(cli, flags, target.as_deref(), fleet.selector.as_deref())?;
        if let Some(output) = output {
            let flame = across::Flame {
                what: format!("callers of {name}"),
                count_name: request::weight_name(None, Some(of)),
                output,
                pod_level: *pod_level,
                bar: Bar::Seconds(*seconds),
            };
            return across::flame(cli, flags, &pods, &flame, |caller, format| {
                path(caller, Some(format))
            });
        }
        let render = |pod: &str, line: &str| {
            if *json {
                fleet::with_pod(line, pod)
            } else {
                format!("[{pod}] {}", pretty(line))
            }
        };
        return across::lines(cli, flags, &pods, |caller| path(caller, None), render);
    }
    let flame = match output {
        None => None,
        Some(file) => Some(format_of(
            file,
            request::profile_format(file),
            ".svg, .pprof, .pb.gz, .folded, .speedscope.json or .json",
        )?),
    };
    let caller = call(single(target)?)?;
    let path = path(&caller, flame)?;
    if let Some(file) = output {
        caller.get(&path, Sink::File(file), Bar::Seconds(*seconds))?;
        eprintln!("wrote {file}");
        return Ok(());
    }
    let render: &dyn Fn(&str) -> String = if *json { &as_is } else { &pretty };
    caller.get(&path, Sink::Lines(render), Bar::None)?;
    Ok(())
}

/// `lttng`.
fn lttng<'a>(call: &Call<'a>, args: &LttngArgs) -> Result<(), PluginError> {
    let LttngArgs {
        target,
        events,
        pid,
        filter,
        loglevel,
        seconds,
        output,
        list,
        live,
    } = args;
    let caller = call(target)?;
    if *list {
        let path = request::lttng_events_path(pid.as_deref());
        print_rendered(&caller.body(&path)?, answer::tracepoint_lines);
        return Ok(());
    }
    let session = request::Session {
        events: events.as_deref(),
        pid: pid.as_deref(),
        filter: filter.as_deref(),
        loglevel: loglevel.as_deref(),
        seconds: *seconds,
    };
    if *live {
        let path = request::lttng_live_path(&session);
        return caller.get(&path, Sink::Lines(&as_is), Bar::None);
    }
    let format = format_of(
        output,
        request::lttng_format(output),
        ".tar.gz (CTF), .json/.ndjson or .txt",
    )?;
    let path = request::lttng_record_path(&session, format);
    caller.get(&path, Sink::File(output), Bar::Seconds(*seconds))?;
    eprintln!("wrote {output}");
    Ok(())
}

/// `dotnet-trace`.
fn dotnet_trace<'a>(call: &Call<'a>, args: &DotnetTraceArgs) -> Result<(), PluginError> {
    let DotnetTraceArgs {
        target,
        pid,
        providers,
        seconds,
        output,
    } = args;
    let caller = call(target)?;
    let pid = pid_or_only_app(&caller, pid.as_deref())?;
    let format = match output.as_deref() {
        None => None,
        Some(file) => Some(format_of(
            file,
            request::dotnet_trace_format(file),
            ".nettrace (PerfView, TraceEvent) or .json/.ndjson",
        )?),
    };
    let path = request::dotnet_trace_path(&pid, providers, *seconds, format);
    match (output, format) {
        (Some(file), Some(_)) => {
            caller.get(&path, Sink::File(file), Bar::Seconds(*seconds))?;
            eprintln!("wrote {file}");
        }
        _ => caller.get(&path, Sink::Lines(&as_is), Bar::None)?,
    }
    Ok(())
}

/// `counters`.
fn counters<'a>(
    cli: &Cli,
    flags: &KubeFlags,
    call: &Call<'a>,
    args: &CountersArgs,
) -> Result<(), PluginError> {
    let CountersArgs {
        target,
        fleet,
        pid,
        providers,
        seconds,
        interval,
        prometheus,
    } = args;
    let path = |caller: &Caller<'_>| -> Result<String, PluginError> {
        let pid = pid_or_only_app(caller, pid.as_deref())?;
        Ok(request::counters_path(
            &pid,
            providers.as_deref(),
            *seconds,
            *interval,
            *prometheus,
        ))
    };
    if fleet.all {
        let pods = across::pods(cli, flags, target.as_deref(), fleet.selector.as_deref())?;
        if *prometheus {
            return across::prometheus(cli, flags, &pods, path);
        }
        return across::lines(cli, flags, &pods, path, |pod, line| {
            fleet::with_pod(line, pod)
        });
    }
    let caller = call(single(target)?)?;
    caller.get(&path(&caller)?, Sink::Lines(&as_is), Bar::None)?;
    Ok(())
}

/// `exceptions`.
fn exceptions<'a>(call: &Call<'a>, args: &ExceptionsArgs) -> Result<(), PluginError> {
    let ExceptionsArgs {
        target,
        pid,
        seconds,
        limit,
        summary,
    } = args;
    let caller = call(target)?;
    let pid = pid_or_only_app(&caller, pid.as_deref())?;
    let path = request::exceptions_path(&pid, *seconds, *limit, *summary);
    let bar = if *summary {
        Bar::Seconds(*seconds)
    } else {
        Bar::None
    };
    caller.get(&path, Sink::Lines(&answer::exception_lines), bar)?;
    Ok(())
}

/// `stacks`.
fn stacks<'a>(call: &Call<'a>, args: &StacksArgs) -> Result<(), PluginError> {
    let StacksArgs { target, pid, json } = args;
    let caller = call(target)?;
    let pid = pid_or_only_app(&caller, pid.as_deref())?;
    caller.get(
        &request::stacks_path(&pid, *json),
        Sink::Lines(&as_is),
        Bar::None,
    )?;
    Ok(())
}

/// `gcdump`.
fn gcdump<'a>(call: &Call<'a>, args: &GcdumpArgs) -> Result<(), PluginError> {
    let GcdumpArgs {
        target,
        pid,
        seconds,
        output,
    } = args;
    let caller = call(target)?;
    let pid = pid_or_only_app(&caller, pid.as_deref())?;
    let bar = Bar::Waiting("walking the heap (a full GC in the app)");
    match output {
        Some(file) => {
            let format = format_of(
                file,
                request::gcdump_format(file),
                ".pb.gz/.pprof (pprof), .json or .txt (the table)",
            )?;
            caller.get(
                &request::gcdump_path(&pid, *seconds, Some(format)),
                Sink::File(file),
                bar,
            )?;
            eprintln!("wrote {file}");
        }
        None => caller.get(
            &request::gcdump_path(&pid, *seconds, None),
            Sink::Lines(&as_is),
            bar,
        )?,
    }
    Ok(())
}

/// `dump`.
fn dump<'a>(call: &Call<'a>, args: &DumpArgs) -> Result<(), PluginError> {
    let DumpArgs {
        target,
        pid,
        kind,
        output,
    } = args;
    let caller = call(target)?;
    let pid = pid_or_only_app(&caller, pid.as_deref())?;
    let path = request::dump_path(&pid, kind.as_deref());
    caller.get(&path, Sink::File(output), Bar::Bytes)?;
    eprintln!("wrote {output}");
    Ok(())
}

/// `rules add|list|rm`.
fn rules<'a>(call: &Call<'a>, command: &RulesCommand) -> Result<(), PluginError> {
    match command {
        RulesCommand::Add { target, file } => {
            let read = if file == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
            } else {
                std::fs::read_to_string(file)
            };
            let text = read.map_err(|source| PluginError::Read {
                file: file.clone(),
                source,
            })?;
            let caller = call(target)?;
            let body = caller.send("POST", "/v1/rules", Some(&text))?;
            print_rendered(&body, answer::rules_table);
        }
        RulesCommand::List { target, json } => {
            let body = call(target)?.body("/v1/rules")?;
            if *json {
                // The agent's JSON holds what apps wrote (exception
                // messages): kept from the terminal's control codes too.
                println!("{}", terminal_safe(&String::from_utf8_lossy(&body)));
            } else {
                print_rendered(&body, answer::rules_table);
            }
        }
        RulesCommand::Rm { target, name } => {
            let path = format!("/v1/rules/{}", request::path_segment(name));
            call(target)?.send("DELETE", &path, None)?;
            eprintln!("removed rule {name}");
        }
    }
    Ok(())
}

/// `artifacts [--pull DIR]`.
fn artifacts<'a>(call: &Call<'a>, args: &ArtifactsArgs) -> Result<(), PluginError> {
    let ArtifactsArgs {
        target,
        rule,
        pull,
        json,
    } = args;
    let caller = call(target)?;
    let body = caller.body("/v1/artifacts")?;
    let mut listed: Vec<tracecar_api::rules::Artifact> =
        serde_json::from_slice(&body).map_err(|e| {
            PluginError::AgentText(format!("the artifact list is not the agent's JSON: {e}"))
        })?;
    listed.retain(|a| rule.as_ref().is_none_or(|r| *r == a.rule));
    let Some(dir) = pull else {
        let text = if *json {
            serde_json::to_string_pretty(&listed).unwrap_or_default() + "\n"
        } else {
            answer::artifacts_table(&listed)
        };
        print!("{}", terminal_safe(&text));
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|e| crate::output::write_error(dir, e))?;
    let (mut pulled, mut kept) = (0, 0);
    for artifact in &listed {
        let (file, record) = request::artifact_files(dir, artifact);
        if std::fs::metadata(&file).is_ok_and(|m| m.len() == artifact.bytes) {
            kept += 1;
            continue;
        }
        let path = format!("/v1/artifacts/{}", request::path_segment(&artifact.id));
        caller.get(&path, Sink::File(&file), Bar::Bytes)?;
        let json = serde_json::to_vec_pretty(artifact).unwrap_or_default();
        crate::output::write_whole(&record, &json)?;
        eprintln!("wrote {file}");
        pulled += 1;
    }
    eprintln!("{pulled} artifact(s) pulled into {dir}, {kept} already there");
    Ok(())
}

/// The one target of a command without `--all` (clap requires it then).
fn single(target: &Option<String>) -> Result<&str, PluginError> {
    target
        .as_deref()
        .ok_or(PluginError::Usage("name a TARGET (or use --all with -l)"))
}

/// Reaches the agent of a target's pod.
type Call<'a> = dyn Fn(&str) -> Result<Caller<'a>, PluginError> + 'a;

/// `--pid`, or the pod's only app process.
fn pid_or_only_app(caller: &Caller<'_>, pid: Option<&str>) -> Result<String, PluginError> {
    match pid {
        Some(pid) => Ok(pid.to_owned()),
        None => answer::only_app_pid(&caller.body("/v1/processes")?)
            .map_err(PluginError::Processes)
            .map(|p| p.to_string()),
    }
}

fn format_of(
    file: &str,
    format: Option<OutputFormat>,
    hint: &'static str,
) -> Result<OutputFormat, PluginError> {
    format.ok_or_else(|| PluginError::Output {
        file: file.to_owned(),
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracecar_api::error::ErrorBody;

    #[test]
    fn errors_read_like_the_agents_hints() {
        let body = serde_json::to_vec(&ErrorBody {
            error: "pid 9 is not visible".to_owned(),
            hint: "is shareProcessNamespace enabled?".to_owned(),
        })
        .unwrap();
        assert_eq!(
            PluginError::from_agent(&body).to_string(),
            "pid 9 is not visible\n  hint: is shareProcessNamespace enabled?"
        );
        assert_eq!(
            PluginError::from_agent(b"curl: (7) Couldn't connect\n").to_string(),
            "curl: (7) Couldn't connect"
        );
    }

    #[test]
    fn usage_errors_exit_64() {
        assert_eq!(
            PluginError::Target(target::TargetError("x".into())).exit_code(),
            64
        );
        let output = PluginError::Output {
            file: "a.png".into(),
            hint: ".svg",
        };
        assert_eq!(output.exit_code(), 64);
        assert_eq!(PluginError::from_agent(b"{}").exit_code(), 1);
    }
}
