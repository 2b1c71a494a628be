//! JSON errors with a hint that says what to do.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tracecar_api::error::ErrorBody;

/// An error response: a status and `{"error": "...", "hint": "..."}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// An error with a status, a message and a hint.
    pub fn new(status: StatusCode, error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                hint: hint.into(),
            },
        }
    }

    /// 400.
    pub fn bad_request(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, hint)
    }

    /// 500.
    pub fn internal(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, error, hint)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

// Domain errors as HTTP answers: what happened (the error's own text) and
// what to do. Every endpoint maps the same error the same way.

impl From<crate::params::SpecError> for ApiError {
    fn from(e: crate::params::SpecError) -> Self {
        Self::bad_request(e.message, e.hint)
    }
}

impl From<crate::procfs::PidNotVisible> for ApiError {
    fn from(e: crate::procfs::PidNotVisible) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            e.to_string(),
            format!(
                "pid {} is not visible: is shareProcessNamespace enabled? List the pod's processes with /v1/processes",
                e.0
            ),
        )
    }
}

/// What the sidecar needs for perf events.
const PERF_HINT: &str =
    "the sidecar needs CAP_PERFMON and seccompProfile Unconfined; check /v1/capabilities";

/// What to do when the agent's memory is near its limit.
const MEMORY_HINT: &str = "raise the sidecar's memory limit (the webhook config's resources.limits.memory), or wait for a running capture to end; /v1/capabilities shows the limit";

impl From<crate::memory::Pressure> for ApiError {
    fn from(e: crate::memory::Pressure) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{e}; nothing new starts until it holds less"),
            MEMORY_HINT,
        )
    }
}

impl From<crate::profile::CaptureError> for ApiError {
    fn from(e: crate::profile::CaptureError) -> Self {
        use crate::profile::CaptureError;
        match e {
            CaptureError::AnswerMemory { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
                format!(
                    "format=pprof takes the least memory; or profile for fewer seconds, at a lower hz, or fewer processes (pid=), or {MEMORY_HINT}"
                ),
            ),
            CaptureError::Memory { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
                format!(
                    "profile for fewer seconds, at a lower hz, or fewer processes (pid=), or {MEMORY_HINT}"
                ),
            ),
            CaptureError::Perf(_) => Self::internal(e.to_string(), PERF_HINT),
            // The node lacks tracefs or the tracepoint: not the request's
            // fault, and not a bug either.
            CaptureError::Tracepoint(_) | CaptureError::Format(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
                "mode=offcpu and mode=wall need the sched:sched_switch tracepoint (tracefs); mode=cpu does not",
            ),
        }
    }
}

impl From<crate::profile::ProfileError> for ApiError {
    fn from(e: crate::profile::ProfileError) -> Self {
        match e {
            crate::profile::ProfileError::Capture(e) => e.into(),
            crate::profile::ProfileError::Render(e) => e.into(),
            e @ crate::profile::ProfileError::NotReported { .. } => Self::bad_request(
                e.to_string(),
                "mode=alloc and mode=contention need a .NET process (GET /v1/processes shows each one's runtime); use mode=cpu, or /v1/uprobe on malloc for native allocations",
            ),
            crate::profile::ProfileError::Runtime(e) => e.into(),
        }
    }
}

impl From<crate::runtime::RuntimeError> for ApiError {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        use crate::dotnet::profiles::ProfileError as P;
        use crate::runtime::RuntimeError as R;
        match e {
            R::DotnetProfile(P::Port(e)) => e.into(),
            e => Self::new(
                axum::http::StatusCode::BAD_GATEWAY,
                e.to_string(),
                "the runtime's event session failed; see the agent's log, and retry",
            ),
        }
    }
}

impl From<crate::stacks::render::RenderError> for ApiError {
    fn from(e: crate::stacks::render::RenderError) -> Self {
        Self::internal(e.to_string(), "try format=folded")
    }
}

impl From<crate::uprobe::symbols::SymbolsError> for ApiError {
    fn from(e: crate::uprobe::symbols::SymbolsError) -> Self {
        use crate::uprobe::symbols::SymbolsError;
        match e {
            SymbolsError::NotVisible(e) => e.into(),
            SymbolsError::Memory(e) => e.into(),
            SymbolsError::ModuleNotMapped { ref mapped, .. } => Self::new(
                StatusCode::NOT_FOUND,
                e.to_string(),
                format!("modules it maps: {}", mapped.join(", ")),
            ),
        }
    }
}

impl From<crate::uprobe::plan::ResolveError> for ApiError {
    fn from(e: crate::uprobe::plan::ResolveError) -> Self {
        use crate::uprobe::plan::ResolveError;
        match e {
            ResolveError::NotVisible(e) => e.into(),
            ResolveError::Module(e) => e.into(),
            ResolveError::UnknownSymbol { ref closest, .. } => Self::new(
                StatusCode::NOT_FOUND,
                e.to_string(),
                format!(
                    "closest names: {}; list them with /v1/symbols",
                    closest.join(", ")
                ),
            ),
            ResolveError::Binary(ref why) if why.is_missing() => Self::new(
                StatusCode::NOT_FOUND,
                e.to_string(),
                "paths are as the process sees them (inside its container) when pid= is given",
            ),
            ResolveError::Binary(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                e.to_string(),
                "the agent reads binaries only as regular files, resolved inside the process's own root",
            ),
            ResolveError::Elf(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                e.to_string(),
                "the agent reads an ELF file's headers and only the sections it needs, each within a limit: probe by offset= (file offset, from objdump or readelf) if the symbol table is over it",
            ),
            ResolveError::GoReturnProbe(_) => Self::bad_request(
                e.to_string(),
                "drop ret= and trace entries only, or pass force=true at your own risk",
            ),
            ResolveError::NotCode(_) => Self::bad_request(
                e.to_string(),
                "give the address of an instruction: a function in /v1/symbols, or JIT code named in the process's perf map",
            ),
            ResolveError::NoCodeOfItsOwn {
                ref compiled_callers,
                ref other_callers,
                ..
            } => {
                let instead = if compiled_callers.is_empty() && other_callers.is_empty() {
                    "no method of its assembly calls it directly".to_owned()
                } else if compiled_callers.is_empty() {
                    format!(
                        "its callers have no code yet either: {}",
                        other_callers.join(", ")
                    )
                } else {
                    format!(
                        "probe a caller that has code (where it is inlined): {}",
                        compiled_callers.join(", ")
                    )
                };
                Self::new(
                    StatusCode::NOT_FOUND,
                    e.to_string(),
                    format!(
                        "{instead}; or restart the app with DOTNET_JitNoInline=1 (COMPlus_JitNoInline=1 on 3.1), or mark the method [MethodImpl(MethodImplOptions.NoInlining)]"
                    ),
                )
            }
            ResolveError::Jit(crate::uprobe::jit::FindError::Unknown { ref closest, .. }) => {
                Self::new(
                    StatusCode::NOT_FOUND,
                    e.to_string(),
                    if closest.is_empty() {
                        "no JIT method is named yet: a method has code once it has run; for Node and Java, see /v1/processes for the perf map (node --perf-basic-prof, jcmd PID Compiler.perfmap)".to_owned()
                    } else {
                        format!(
                            "closest names: {}; a method has code once it has run",
                            closest.join(", ")
                        )
                    },
                )
            }
            ResolveError::Jit(crate::uprobe::jit::FindError::Ambiguous {
                ref candidates, ..
            }) => Self::bad_request(
                e.to_string(),
                format!(
                    "name one of them in full (the parameter list is optional): {}",
                    candidates.join("; ")
                ),
            ),
            ResolveError::Runtime { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                e.to_string(),
                "JIT methods of a .NET process are named by its runtime through the diagnostic port: see /v1/processes (dotnet.diagnostic_port) and /v1/capabilities",
            ),
            ResolveError::Code { .. } => Self::internal(
                e.to_string(),
                "reading another process's code needs CAP_SYS_PTRACE; the code may also have been freed meanwhile: retry",
            ),
            ResolveError::NoCodeRange { .. } | ResolveError::NoReturns { .. } => Self::bad_request(
                e.to_string(),
                "drop ret= to trace the entries, with their arguments",
            ),
            ResolveError::RegisterBudget { .. } => Self::new(
                StatusCode::CONFLICT,
                e.to_string(),
                "drop ret= to use one breakpoint (the entry) per version",
            ),
            ResolveError::Spec(spec) => spec.into(),
            ResolveError::NotElf(_)
            | ResolveError::OffsetOutsideText { .. }
            | ResolveError::Unmapped(_)
            | ResolveError::NoBinary => Self::bad_request(
                e.to_string(),
                "check /v1/symbols for probeable functions and their offsets",
            ),
        }
    }
}

impl From<crate::uprobe::attach::AttachError> for ApiError {
    fn from(e: crate::uprobe::attach::AttachError) -> Self {
        use crate::uprobe::attach::AttachError;
        match e {
            AttachError::NoDebugRegister { .. } => Self::new(
                StatusCode::CONFLICT,
                e.to_string(),
                "end one of those probes (or the debugger), or drop ret= to need fewer breakpoints",
            ),
            AttachError::RingBudget { .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                e.to_string(),
                "end one of the running probes (those with stack= take the most), then retry",
            ),
            _ => Self::internal(
                e.to_string(),
                "the sidecar needs CAP_SYS_ADMIN (Linux requires it for uprobes since 2025; it also allows bpf()) and seccompProfile Unconfined: the minimal profile grants it with the uprobe feature (tracecar.dev/features); check /v1/capabilities",
            ),
        }
    }
}

impl From<crate::lttng::RecordError> for ApiError {
    fn from(e: crate::lttng::RecordError) -> Self {
        use crate::lttng::RecordError;
        match e {
            RecordError::NoDaemon => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
                "the agent restarts lttng-sessiond on its own; see lttng_sessiond in /v1/capabilities",
            ),
            RecordError::Rejected(_) => Self::bad_request(
                e.to_string(),
                "check the events patterns and the filter expression, e.g. filter=seq > 10 && msg == \"x*\"",
            ),
            RecordError::Cancelled => Self::new(
                StatusCode::REQUEST_TIMEOUT,
                e.to_string(),
                "the client went away",
            ),
            RecordError::Lttng(_)
            | RecordError::TraceDir { .. }
            | RecordError::ForeignChunk { .. }
            | RecordError::Babeltrace(_) => {
                Self::internal(e.to_string(), "see the agent's log and /v1/capabilities")
            }
        }
    }
}

impl From<crate::dotnet::port::PortError> for ApiError {
    fn from(e: crate::dotnet::port::PortError) -> Self {
        use crate::dotnet::port::PortError as P;
        use axum::http::StatusCode;
        let hint = match &e {
            P::NotDotnet { .. } => {
                return Self::bad_request(
                    e.to_string(),
                    "/v1/dotnet/* needs a .NET (CoreCLR) process; GET /v1/processes shows each process's runtime",
                );
            }
            P::Proc { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                return Self::new(StatusCode::FORBIDDEN, e.to_string(), DENIED_PROC);
            }
            P::Proc { pid, .. } => {
                return Self::new(
                    StatusCode::NOT_FOUND,
                    e.to_string(),
                    format!("pid {pid} may have exited; GET /v1/processes"),
                );
            }
            P::NoSocket { source, .. } if !source.is_missing() => {
                "something in the app's filesystem has the runtime's socket name (a symlink, a file, a FIFO); the agent does not follow or use it"
            }
            P::NoSocket { .. } => {
                "the runtime creates the socket at start-up in its TMPDIR unless DOTNET_EnableDiagnostics=0 (COMPlus_EnableDiagnostics=0 on 3.1); check the app's environment"
            }
            P::Dead { .. } => {
                "the runtime is not answering on its diagnostic port: it may be exiting, suspended, or hung; retry, or take a dump with /v1/dump"
            }
            P::Ipc { .. } => {
                "the runtime refused the request; see the error code, and the app's log"
            }
        };
        Self::new(StatusCode::BAD_GATEWAY, e.to_string(), hint)
    }
}

impl From<crate::dotnet::counters::CountersError> for ApiError {
    fn from(e: crate::dotnet::counters::CountersError) -> Self {
        use crate::dotnet::counters::CountersError as C;
        match e {
            C::Port(e) => e.into(),
            C::NoValues { .. } => Self::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                e.to_string(),
                "the runtime publishes EventCounters once per interval= from the session's start; a runtime that is starting, suspended or overloaded can be late: retry, with a longer interval= if it is busy",
            ),
        }
    }
}

impl From<crate::dotnet::gcdump::GcdumpError> for ApiError {
    fn from(e: crate::dotnet::gcdump::GcdumpError) -> Self {
        use crate::dotnet::gcdump::GcdumpError as G;
        match e {
            G::Port(e) => e.into(),
            G::Unfinished { .. } => Self::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                e.to_string(),
                "the runtime walks the heap during the full GC the session starts; a large heap or a busy runtime takes longer: retry with a longer seconds= (up to 600)",
            ),
        }
    }
}

impl From<crate::profile::continuous::WindowError> for ApiError {
    fn from(e: crate::profile::continuous::WindowError) -> Self {
        use crate::profile::continuous::WindowError as W;
        match &e {
            W::Off { mode, .. } => Self::new(
                StatusCode::NOT_FOUND,
                e.to_string(),
                format!(
                    "annotate the pod template with tracecar.dev/continuous: \"{mode}\" and roll the pods out again; /debug/pprof/profile?seconds=N takes a profile now"
                ),
            ),
            W::NotYet { window_seconds, .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
                format!(
                    "a window completes every {window_seconds} s once the agent runs: retry then"
                ),
            ),
        }
    }
}

impl From<crate::profile::now::StacksError> for ApiError {
    fn from(e: crate::profile::now::StacksError) -> Self {
        use crate::profile::now::StacksError as S;
        use axum::http::StatusCode;
        match &e {
            S::Threads { pid, .. } => Self::new(
                StatusCode::NOT_FOUND,
                e.to_string(),
                format!("pid {pid} may have exited; GET /v1/processes"),
            ),
            S::NotStopped { refused: true, .. } => Self::new(
                StatusCode::FORBIDDEN,
                e.to_string(),
                "the agent needs CAP_SYS_PTRACE (the webhook's profiles have it), and the process must not be traced by another debugger",
            ),
            S::NotStopped { .. } => Self::new(
                StatusCode::CONFLICT,
                e.to_string(),
                "the process or its threads exited, or none stopped within 2 s: retry",
            ),
        }
    }
}

/// The hint for `/proc/PID` files the kernel refuses the agent: another
/// user's process, without the capabilities to look inside it.
const DENIED_PROC: &str = "the agent lacks CAP_SYS_PTRACE or CAP_DAC_READ_SEARCH for this process of another user: check the pod's tracecar.dev/features (each feature grants what it needs) and GET /v1/capabilities";

impl From<crate::dump::DumpError> for ApiError {
    fn from(e: crate::dump::DumpError) -> Self {
        use crate::dump::DumpError as D;
        use axum::http::StatusCode;
        let e = match e {
            D::Port(port) => return port.into(),
            other => other,
        };
        let (status, hint) = match &e {
            D::Port(_) => (StatusCode::BAD_GATEWAY, String::new()),
            D::Proc { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                (StatusCode::FORBIDDEN, DENIED_PROC.to_string())
            }
            D::Proc { .. } => (StatusCode::NOT_FOUND, "the process may have exited; GET /v1/processes".to_string()),
            D::Itself { .. } => (
                StatusCode::BAD_REQUEST,
                "pick an app process: GET /v1/processes".to_string(),
            ),
            D::Ptrace { why, .. } if why.contains("EPERM") => (
                StatusCode::FORBIDDEN,
                "the agent needs CAP_SYS_PTRACE (the webhook's profiles have it), and the process must not be traced by another debugger".to_string(),
            ),
            D::Ptrace { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the process may have exited or be traced by another debugger; retry, and see the agent's log".to_string(),
            ),
            D::Local { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "check --dump-dir (TRACECAR_DUMP_DIR): it must be a writable directory on a filesystem with O_TMPFILE support".to_string(),
            ),
            D::Failed { .. } => (
                StatusCode::BAD_GATEWAY,
                "the runtime's createdump failed: check the app's TMPDIR is writable and has room, and the app's log".to_string(),
            ),
            D::NoRoom { .. } => (
                StatusCode::INSUFFICIENT_STORAGE,
                "take type=mini, or give the directory more room (the app's /tmp for .NET dumps, --dump-dir for others)".to_string(),
            ),
            D::TooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "raise limit_mb=, or take type=mini".to_string(),
            ),
            D::Unreadable { .. } => (
                StatusCode::BAD_GATEWAY,
                "the runtime's dump is not a regular file the agent can read; nothing was left behind".to_string(),
            ),
        };
        Self::new(status, e.to_string(), hint)
    }
}

impl From<crate::rules::RulesError> for ApiError {
    fn from(e: crate::rules::RulesError) -> Self {
        use crate::rules::RulesError as R;
        match e {
            R::Spec(spec) => spec.into(),
            R::Exists(_) => Self::new(
                StatusCode::CONFLICT,
                e.to_string(),
                "remove it first (DELETE /v1/rules/NAME), or give the new rule another name",
            ),
            R::TooMany(_) => Self::new(
                StatusCode::CONFLICT,
                e.to_string(),
                "remove rules you no longer need (DELETE /v1/rules/NAME)",
            ),
            R::Feature { .. } => Self::new(
                StatusCode::FORBIDDEN,
                e.to_string(),
                "the pod's tracecar.dev/features annotation lists what the agent may do",
            ),
            R::NotFound(_) => Self::new(
                StatusCode::NOT_FOUND,
                e.to_string(),
                "GET /v1/rules lists the rules in force",
            ),
            R::FromConfigMap { .. } => Self::new(
                StatusCode::CONFLICT,
                e.to_string(),
                "edit or remove it in the ConfigMap the pod's tracecar.dev/rules annotation names; the agent reads it again when it changes",
            ),
        }
    }
}

impl From<crate::rules::store::StoreError> for ApiError {
    fn from(e: crate::rules::store::StoreError) -> Self {
        match e {
            crate::rules::store::StoreError::NotFound(_) => Self::new(
                StatusCode::NOT_FOUND,
                e.to_string(),
                "GET /v1/artifacts lists the artifacts kept; the oldest are deleted when the store is full",
            ),
            _ => Self::internal(e.to_string(), "see the agent's log"),
        }
    }
}
