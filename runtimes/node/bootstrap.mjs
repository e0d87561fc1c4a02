// Lamina's Node.js runtime: a Lambda Runtime API client with Lambda's handler conventions.
//
// Started as `node /var/runtime/bootstrap.mjs` inside the sandbox. Handlers are `file.export`
// (`index.handler`, `src/app.handler`); the file may be CommonJS (.js, .cjs) or an ES module
// (.mjs, or .js under "type": "module"). Async handlers and callback handlers both work.

import http from "node:http";
import { closeSync, existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { Writable } from "node:stream";
import { pathToFileURL } from "node:url";
import { format } from "node:util";

// In a sandbox built ahead of time (_LAMINA_ASSIGNMENT_FD set) Node starts before its function
// exists: with this module loaded, it waits for the assignment, `{"env": {...}}` on that
// descriptor, then takes on the function's environment and carries on as if started with it.
if (process.env._LAMINA_ASSIGNMENT_FD !== undefined) {
  const fd = Number(process.env._LAMINA_ASSIGNMENT_FD);
  const assignment = JSON.parse(readFileSync(fd, "utf8"));
  closeSync(fd);
  for (const key of Object.keys(process.env)) {
    delete process.env[key];
  }
  Object.assign(process.env, assignment.env);
  // The code was mounted over the directory this process started in.
  process.chdir(process.env.LAMBDA_TASK_ROOT || "/var/task");
}

const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(":");
const PREFIX = "/2018-06-01/runtime";
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const taskRoot = process.env.LAMBDA_TASK_ROOT || "/var/task";

function request(method, urlPath, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(body);
    const req = http.request(
      { host, port, method, path: urlPath, agent, headers: { ...headers, ...(data ? { "content-length": data.length } : {}) } },
      (res) => {
        const chunks = [];
        res.on("data", (chunk) => chunks.push(chunk));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

function errorBody(error) {
  const err = error instanceof Error ? error : new Error(String(error));
  return JSON.stringify({
    errorType: err.name || "Error",
    errorMessage: err.message,
    trace: typeof err.stack === "string" ? err.stack.split("\n") : [],
  });
}

class RuntimeError extends Error {
  constructor(name, message) {
    super(message);
    this.name = name;
  }
}

// Lambda's Node runtime prefixes every console line with time, request id and level.
let currentRequestId = undefined;
for (const [method, level] of [["log", "INFO"], ["info", "INFO"], ["warn", "WARN"], ["error", "ERROR"], ["debug", "DEBUG"], ["trace", "TRACE"]]) {
  console[method] = (...args) => {
    const text = format(...args).replace(/\n/g, "\r");
    process.stdout.write(`${new Date().toISOString()}\t${currentRequestId ?? "undefined"}\t${level}\t${text}\n`);
  };
}

// Response streaming, as Lambda's Node.js runtime offers it: `awslambda.streamifyResponse`
// marks a handler `(event, responseStream, context)` that writes its response as it goes, and
// `awslambda.HttpResponseStream.from` puts the status and headers a function URL answers with
// in front of it (a JSON prelude, then eight NUL bytes).
const STREAMING = Symbol.for("aws.lambda.runtime.handler.streaming");
const HTTP_INTEGRATION = "application/vnd.awslambda.http-integration-response";
globalThis.awslambda = {
  streamifyResponse(handler) {
    handler[STREAMING] = "response";
    return handler;
  },
  HttpResponseStream: {
    from(stream, prelude) {
      stream.setContentType(HTTP_INTEGRATION);
      stream.write(JSON.stringify(prelude ?? {}));
      stream.write(Buffer.alloc(8));
      return stream;
    },
  },
};

// The response of invocation `id` as a writable stream: a chunked POST, opened at the first
// write (so that `setContentType` can still change it), each write sent as it is made.
function responseStream(id) {
  let contentType = "application/octet-stream";
  let req;
  let finished;
  const open = () => {
    if (!req) {
      req = http.request({
        host, port, agent, method: "POST", path: `${PREFIX}/invocation/${id}/response`,
        headers: {
          "content-type": contentType,
          "lambda-runtime-function-response-mode": "streaming",
          "transfer-encoding": "chunked",
          trailer: "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
        },
      });
      req.on("socket", (socket) => socket.setNoDelay(true));
      finished = new Promise((resolve) => {
        req.on("response", (res) => res.resume().on("end", resolve));
        req.on("error", resolve);
      });
    }
    return req;
  };
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      open().write(chunk, callback);
    },
    final(callback) {
      open().end(callback);
    },
  });
  stream.setContentType = (type) => {
    contentType = type;
  };
  stream.started = () => req !== undefined;
  // Ends the response with the error in its trailers (it began: no /error any more).
  stream.fail = (error) => {
    open().addTrailers({
      "Lambda-Runtime-Function-Error-Type": error.name || "Error",
      "Lambda-Runtime-Function-Error-Body": Buffer.from(errorBody(error)).toString("base64"),
    });
    req.end();
  };
  stream.done = () => {
    open();
    return finished;
  };
  return stream;
}

async function stream(handler, event, ctx, id) {
  const response = responseStream(id);
  try {
    await handler(event, response, ctx);
    if (!response.writableEnded) {
      response.end();
    }
  } catch (err) {
    console.error(`Invoke Error \t${errorBody(err)}`);
    if (!response.started()) {
      await request("POST", `${PREFIX}/invocation/${id}/error`, errorBody(err), { "content-type": "application/json" });
      return;
    }
    response.fail(err);
  }
  await response.done();
}

async function loadHandler(spec) {
  const dot = spec.lastIndexOf(".");
  if (dot <= 0 || dot === spec.length - 1) {
    throw new RuntimeError("Runtime.MalformedHandlerName", `Bad handler ${spec}`);
  }
  const modulePath = spec.slice(0, dot);
  const exportPath = spec.slice(dot + 1);
  const base = path.resolve(taskRoot, modulePath);
  const file = [".js", ".mjs", ".cjs"].map((ext) => base + ext).find((candidate) => existsSync(candidate));
  if (!file) {
    throw new RuntimeError("Runtime.ImportModuleError", `Error: Cannot find module '${modulePath}'`);
  }
  let module;
  try {
    module = await import(pathToFileURL(file).href);
  } catch (err) {
    if (err instanceof SyntaxError) {
      throw new RuntimeError("Runtime.UserCodeSyntaxError", `${err.name}: ${err.message}`);
    }
    if (err && err.code === "ERR_MODULE_NOT_FOUND") {
      throw new RuntimeError("Runtime.ImportModuleError", `Error: ${err.message}`);
    }
    throw err;
  }
  let handler = module;
  for (const part of exportPath.split(".")) {
    handler = handler?.[part] ?? handler?.default?.[part];
  }
  if (typeof handler !== "function") {
    throw new RuntimeError("Runtime.HandlerNotFound", `${spec} is undefined or not exported`);
  }
  return handler;
}

function context(headers) {
  const deadline = Number(headers["lambda-runtime-deadline-ms"] || 0);
  const parse = (value) => (value ? JSON.parse(value) : undefined);
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: headers["lambda-runtime-invoked-function-arn"],
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    awsRequestId: headers["lambda-runtime-aws-request-id"],
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parse(headers["lambda-runtime-client-context"]),
    identity: parse(headers["lambda-runtime-cognito-identity"]),
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}

function run(handler, event, ctx) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const callback = (err, result) => {
      if (settled) return;
      settled = true;
      err ? reject(err) : resolve(result);
    };
    ctx.done = callback;
    ctx.succeed = (result) => callback(null, result);
    ctx.fail = (err) => callback(err ?? new Error("handled"));
    try {
      const returned = handler(event, ctx, callback);
      if (returned && typeof returned.then === "function") {
        returned.then((result) => callback(null, result), (err) => callback(err));
      } else if (handler.length < 3) {
        callback(null, returned);
      }
    } catch (err) {
      callback(err);
    }
  });
}

async function main() {
  let handler;
  try {
    handler = await loadHandler(process.env._HANDLER || "");
  } catch (err) {
    console.error(`${err.name}: ${err.message}`);
    await request("POST", `${PREFIX}/init/error`, errorBody(err), {
      "content-type": "application/json",
      "lambda-runtime-function-error-type": err.name,
    });
    process.exit(1);
  }
  for (;;) {
    const next = await request("GET", `${PREFIX}/invocation/next`);
    const id = next.headers["lambda-runtime-aws-request-id"];
    currentRequestId = id;
    if (next.headers["lambda-runtime-trace-id"]) {
      process.env._X_AMZN_TRACE_ID = next.headers["lambda-runtime-trace-id"];
    }
    let event;
    try {
      event = next.body.length ? JSON.parse(next.body.toString()) : undefined;
    } catch (err) {
      await request("POST", `${PREFIX}/invocation/${id}/error`, errorBody(new RuntimeError("Runtime.UnmarshalError", err.message)), { "content-type": "application/json" });
      continue;
    }
    if (handler[STREAMING] === "response") {
      await stream(handler, event, context(next.headers), id);
      continue;
    }
    try {
      const result = await run(handler, event, context(next.headers));
      const body = result === undefined ? "null" : JSON.stringify(result);
      await request("POST", `${PREFIX}/invocation/${id}/response`, body, { "content-type": "application/json" });
    } catch (err) {
      console.error(`Invoke Error \t${errorBody(err)}`);
      await request("POST", `${PREFIX}/invocation/${id}/error`, errorBody(err), { "content-type": "application/json" });
    }
  }
}

main();
