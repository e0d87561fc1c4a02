"""Lamina's Python runtime: a Lambda Runtime API client with Lambda's handler conventions.

Started as `python3.X -S -B /var/runtime/bootstrap.py` inside the sandbox. Kept lean on
purpose: the cold path imports only os, sys, json, socket and importlib; traceback is imported
when an error needs formatting. HTTP/1.1 is spoken by hand over one keep-alive connection.

In a sandbox built ahead of time (`_LAMINA_ASSIGNMENT_FD` set) the interpreter starts before its
function exists: with its modules loaded, it waits for the assignment, then takes on the
function's environment and carries on as if it had been started with it.
"""

import importlib
import json
import os
import socket
import sys
import time

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
PREFIX = "/2018-06-01/runtime"


class RuntimeApi:
    """The smallest HTTP/1.1 client the Runtime API needs: one connection, reopened on loss."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.address = (host, int(port))
        self.sock = None
        self.reader = None

    def _connect(self):
        self.sock = socket.create_connection(self.address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def request(self, method, path, body=b"", headers=None):
        for attempt in (0, 1):
            try:
                if self.sock is None:
                    self._connect()
                return self._exchange(method, path, body, headers or {})
            except (ConnectionError, OSError):
                self.close()
                if attempt:
                    raise

    def _exchange(self, method, path, body, headers):
        head = [f"{method} {path} HTTP/1.1", f"Host: {API}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        status_line = self.reader.readline()
        if not status_line:
            raise ConnectionError("the Runtime API closed the connection")
        status = int(status_line.split()[1])
        response_headers = {}
        while True:
            line = self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            response_headers[name.strip().lower()] = value.strip()
        length = int(response_headers.get("content-length", "0"))
        data = self.reader.read(length) if length else b""
        if response_headers.get("connection", "").lower() == "close":
            self.close()
        return status, response_headers, data

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = self.reader = None


class LambdaContext:
    def __init__(self, request_id, deadline_ms, invoked_arn, client_context, identity):
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.client_context = client_context
        self.identity = identity
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))

    def __repr__(self):
        return f"LambdaContext([aws_request_id={self.aws_request_id},function_name={self.function_name}])"


class _Namespace:
    def __init__(self, values):
        for key, value in (values or {}).items():
            setattr(self, key, value)


def error_body(error_type, message, trace=None, request_id=None):
    body = {"errorMessage": message, "errorType": error_type, "stackTrace": trace or []}
    if request_id:
        body["requestId"] = request_id
    return json.dumps(body).encode()


def exception_body(exc, request_id=None):
    import traceback

    trace = traceback.format_list(traceback.extract_tb(exc.__traceback__)[1:])
    return error_body(type(exc).__name__, str(exc), [line.rstrip("\n") for line in trace], request_id)


def load_handler(spec):
    """`path/to/module.function` -> the function, or (errorType, message) on failure."""
    module_path, _, function_name = spec.rpartition(".")
    if not module_path or not function_name:
        return None, ("Runtime.MalformedHandlerName", f"Bad handler '{spec}': not enough values to unpack (expected 2, got 1)")
    module_name = module_path.replace("/", ".")
    if module_name in sys.builtin_module_names:
        return None, ("Runtime.BuiltInModuleConflict",
                      f"Cannot use built-in module {module_name} as a handler module")
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        return None, ("Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}")
    except ImportError as exc:
        return None, ("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}")
    except Exception as exc:  # raised while the module initialises: reported under its own type
        return None, (type(exc).__name__, str(exc))
    handler = getattr(module, function_name, None)
    if handler is None:
        return None, ("Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'")
    return handler, None


def await_assignment():
    """Blocks until the platform hands this zygote its function: the JSON `{"env": {...}}`
    on the assignment descriptor, closed after it. Returns the extra import paths the
    function's PYTHONPATH asks for (an interpreter started without it did not add them)."""
    fd = int(os.environ["_LAMINA_ASSIGNMENT_FD"])
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    assignment = json.loads(b"".join(chunks))
    os.environ.clear()
    os.environ.update(assignment["env"])
    # The code was mounted over the directory this process started in.
    os.chdir(os.environ.get("LAMBDA_TASK_ROOT", "/var/task"))
    return [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]


def main():
    extra_paths = await_assignment() if "_LAMINA_ASSIGNMENT_FD" in os.environ else []
    task_root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")
    # The SDK the runtime carries (boto3, botocore) comes after the function's own code and
    # layers, as on Lambda: a function that bundles its own copy gets its own.
    sys.path[:0] = [task_root, "/opt/python", *extra_paths, "/var/runtime/sdk/python"]
    api = RuntimeApi(API)
    handler, failure = load_handler(os.environ["_HANDLER"])
    if failure:
        error_type, message = failure
        print(f"[ERROR] {error_type}: {message}", flush=True)
        api.request("POST", f"{PREFIX}/init/error", error_body(error_type, message),
                    {"Lambda-Runtime-Function-Error-Type": error_type, "Content-Type": "application/json"})
        sys.exit(1)

    while True:
        _, headers, event_bytes = api.request("GET", f"{PREFIX}/invocation/next")
        request_id = headers.get("lambda-runtime-aws-request-id", "")
        trace_id = headers.get("lambda-runtime-trace-id")
        if trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = trace_id
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        client_context = headers.get("lambda-runtime-client-context")
        identity = headers.get("lambda-runtime-cognito-identity")
        context = LambdaContext(
            request_id,
            int(headers.get("lambda-runtime-deadline-ms", "0")),
            headers.get("lambda-runtime-invoked-function-arn"),
            _Namespace(json.loads(client_context)) if client_context else None,
            _Namespace(json.loads(identity)) if identity else None,
        )
        try:
            event = json.loads(event_bytes) if event_bytes else None
        except ValueError as exc:
            body = error_body("Runtime.UnmarshalError", f"Unable to unmarshal input: {exc}", None, request_id)
            api.request("POST", f"{PREFIX}/invocation/{request_id}/error", body,
                        {"Content-Type": "application/json"})
            continue
        try:
            result = handler(event, context)
        except Exception as exc:
            body = exception_body(exc, request_id)
            print(f"[ERROR] {type(exc).__name__}: {exc}", flush=True)
            api.request("POST", f"{PREFIX}/invocation/{request_id}/error", body,
                        {"Content-Type": "application/json"})
            continue
        try:
            payload = result if isinstance(result, (bytes, bytearray)) else json.dumps(result).encode()
        except (TypeError, ValueError) as exc:
            body = error_body("Runtime.MarshalError", f"Unable to marshal response: {exc}", None, request_id)
            api.request("POST", f"{PREFIX}/invocation/{request_id}/error", body,
                        {"Content-Type": "application/json"})
            continue
        api.request("POST", f"{PREFIX}/invocation/{request_id}/response", bytes(payload),
                    {"Content-Type": "application/json"})


if __name__ == "__main__":
    main()
