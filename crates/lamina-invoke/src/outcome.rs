//! Outcomes as Lambda reports them: the response, the log lines, the REPORT line.

use lamina_core::function::Version;
use lamina_core::invoke::{InvokeRequest, InvokeResponse};
use lamina_core::{Error, Result};
use lamina_runtime::{Instance, Outcome, StartError, Timing};

use crate::platform_error;

const UNHANDLED: &str = "Unhandled";

fn failed(version: &Version, body: bytes::Bytes) -> InvokeResponse {
    InvokeResponse {
        executed_version: version.version.clone(),
        payload: body,
        function_error: Some(UNHANDLED.to_owned()),
        log_tail: None,
    }
}

pub(crate) fn respond(
    request: &InvokeRequest,
    version: &Version,
    outcome: &Outcome,
) -> InvokeResponse {
    let id = &request.request_id;
    match outcome {
        Outcome::Success(body) => InvokeResponse {
            executed_version: version.version.clone(),
            payload: body.clone(),
            function_error: None,
            log_tail: None,
        },
        Outcome::FunctionError(body) | Outcome::InitError(body) => failed(version, body.clone()),
        Outcome::Timeout => failed(
            version,
            platform_error(
                "Sandbox.Timedout",
                format!(
                    "RequestId: {id} Error: Task timed out after {}.00 seconds",
                    version.timeout
                ),
            ),
        ),
        Outcome::Exited {
            out_of_memory: true,
            ..
        } => failed(
            version,
            platform_error(
                "Runtime.OutOfMemory",
                format!("RequestId: {id} Error: Runtime exited with error: signal: killed"),
            ),
        ),
        Outcome::Exited { code, .. } => {
            let how = if *code > 128 {
                format!("signal: {}", code - 128)
            } else {
                format!("exit status {code}")
            };
            failed(
                version,
                platform_error(
                    "Runtime.ExitError",
                    format!("RequestId: {id} Error: Runtime exited with error: {how}"),
                ),
            )
        }
        Outcome::ResponseTooLarge(size) => failed(
            version,
            platform_error(
                "Function.ResponseSizeTooLarge",
                format!(
                    "Response payload size ({size} bytes) exceeded maximum allowed payload size ({} bytes).",
                    lamina_runtime::MAX_RESPONSE_BYTES
                ),
            ),
        ),
    }
}

/// A platform line for failures the function's own output does not explain.
pub(crate) fn log_line(
    request: &InvokeRequest,
    version: &Version,
    outcome: &Outcome,
) -> Option<String> {
    let now = lamina_core::time::lambda_timestamp(lamina_core::time::now());
    let id = &request.request_id;
    match outcome {
        Outcome::Timeout => Some(format!(
            "{now} {id} Task timed out after {}.00 seconds",
            version.timeout
        )),
        Outcome::Exited {
            out_of_memory: true,
            ..
        } => Some(format!(
            "RequestId: {id} Error: Runtime exited with error: signal: killed\nRuntime.OutOfMemory"
        )),
        Outcome::Exited { code, .. } => Some(format!(
            "RequestId: {id} Error: Runtime exited with error: exit status {code}\nRuntime.ExitError"
        )),
        _ => None,
    }
}

pub(crate) fn report(id: &str, timing: Timing, instance: &Instance) -> String {
    let ms = timing.duration.as_secs_f64() * 1000.0;
    // Lambda bills every invocation at least a millisecond.
    let billed = (ms.ceil() as u64).max(1);
    let mut line = format!(
        "REPORT RequestId: {id}\tDuration: {ms:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
        instance.memory_mb,
        instance.max_memory_used_mb(),
    );
    if let Some(init) = timing.init {
        line.push_str(&format!(
            "\tInit Duration: {:.2} ms",
            init.as_secs_f64() * 1000.0
        ));
    }
    line
}

/// An instance that could not even be started.
pub(crate) fn start_failure(
    request: &InvokeRequest,
    version: &Version,
    err: StartError,
) -> Result<InvokeResponse> {
    let id = &request.request_id;
    match err {
        StartError::NoBootstrap => Ok(failed(
            version,
            platform_error(
                "Runtime.InvalidEntrypoint",
                format!(
                    "RequestId: {id} Error: Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]"
                ),
            ),
        )),
        StartError::UnknownRuntime(runtime) => Err(Error::new(
            lamina_core::ErrorKind::Service,
            format!("the runtime {runtime} is no longer available on this host"),
        )),
        StartError::Sandbox(reason) => {
            tracing::error!(%reason, "cannot create a sandbox");
            Err(Error::service(
                "The execution environment could not be created.",
            ))
        }
    }
}
