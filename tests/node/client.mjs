// A registry client in another language, loading modelreg's contract the two ways the
// README offers another team:
//
//   node client.mjs --target HOST:PORT --descriptor build/modelreg.binpb ...
//       the published, self-contained descriptor set (`make descriptor`)
//   node client.mjs --target HOST:PORT --protos protos --include <googleapis> ...
//       the .proto sources, with an include path that holds google/rpc/*.proto
//
// then calls ResolveReference once per --resolve REF and BatchGetModelVersions once with
// every --batch REF, and prints one JSON document: each answer as grpc-js decoded it,
// errors with their google.rpc details (ErrorInfo, BadRequest) unpacked. Exit 0 whenever
// the calls were made, whatever they answered; the caller judges the answers. The key in
// MODELREG_TOKEN, if set, goes with every call as `authorization: Bearer <key>`.

import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import "protobufjs/ext/descriptor/index.js"; // adds Root.fromDescriptor

const SERVICE_FILE = "modelreg/v1/registry_service.proto";
const DETAILS_FILE = "google/rpc/error_details.proto"; // the types of status details
const DETAILS_KEY = "grpc-status-details-bin";
// Field names as in the .proto, int64 as decimal strings (exact), enums by name.
const DECODE = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
// Details only with the fields their sender set, as protobuf's JSON mapping prints them.
const DETAIL = { ...DECODE, defaults: false };
const DEADLINE_MS = 15_000;

const { values } = parseArgs({
  options: {
    target: { type: "string" },
    descriptor: { type: "string" },
    protos: { type: "string" },
    include: { type: "string", multiple: true, default: [] },
    resolve: { type: "string", multiple: true, default: [] },
    batch: { type: "string", multiple: true, default: [] },
  },
});
if (!values.target || !(values.descriptor || values.protos)) {
  console.error("usage: client.mjs --target HOST:PORT (--descriptor FILE | --protos DIR " +
    "[--include DIR]...) [--resolve REF]... [--batch REF]...");
  process.exit(2);
}

// The package definition grpc-js serves calls from, and a protobufjs root for decoding
// the google.protobuf.Any details of a status.
function loadContract() {
  if (values.descriptor) {
    const bytes = readFileSync(values.descriptor);
    return {
      definition: protoLoader.loadFileDescriptorSetFromBuffer(bytes, DECODE),
      root: protobuf.Root.fromDescriptor(bytes),
    };
  }
  const includeDirs = [values.protos, ...values.include];
  const files = [SERVICE_FILE, DETAILS_FILE];
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) =>
    includeDirs.map((dir) => path.join(dir, target)).find((p) => existsSync(p)) ?? target;
  root.loadSync(files, { keepCase: true });
  return { definition: protoLoader.loadSync(files, { ...DECODE, includeDirs }), root };
}

const { definition, root } = loadContract();
const Status = root.lookupType("google.rpc.Status");

function unpack(any) {
  const typeName = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
  const type = root.lookupType(typeName);
  return { type: typeName, ...type.toObject(type.decode(any.value), DETAIL) };
}

function statusOf(status) {
  return { code: status.code, message: status.message, details: status.details.map(unpack) };
}

// A failed call's google.rpc.Status, from the trailer the server attached it to.
function callError(err) {
  const [raw] = err.metadata?.get(DETAILS_KEY) ?? [];
  if (!raw) return { code: err.code, message: err.details, details: [] };
  return statusOf(Status.toObject(Status.decode(raw), DECODE));
}

// The caller's key (MODELREG_TOKEN), sent as `authorization: Bearer ...` on every call.
const TOKEN = process.env.MODELREG_TOKEN ?? "";

function call(client, method, request) {
  const deadline = new Date(Date.now() + DEADLINE_MS);
  const metadata = new grpc.Metadata();
  if (TOKEN) metadata.set("authorization", `Bearer ${TOKEN}`);
  return new Promise((resolve) => {
    client[method](request, metadata, { deadline }, (err, reply) =>
      resolve(err ? { error: callError(err) } : reply));
  });
}

const { RegistryService } = grpc.loadPackageDefinition(definition).modelreg.v1;
const client = new RegistryService(values.target, grpc.credentials.createInsecure());
try {
  const resolve = {};
  for (const reference of values.resolve) {
    const reply = await call(client, "ResolveReference", { reference });
    resolve[reference] = reply.error ? reply : { version: reply.version };
  }
  let batch = null;
  if (values.batch.length) {
    const reply = await call(client, "BatchGetModelVersions", { references: values.batch });
    batch = reply.error ? reply : reply.results.map((r) => ({
      reference: r.reference,
      ...(r.result === "error" ? { error: statusOf(r.error) } : { version: r.version }),
    }));
  }
  const loadedFrom = values.descriptor ? "descriptor" : "sources";
  console.log(JSON.stringify({ loaded_from: loadedFrom, resolve, batch }));
} finally {
  client.close();
}
