#!/usr/bin/env node
// A small Node.js client of the Plankline gateway (plankline.v1.Plankline).
//
// It loads protos/plankline/v1/api.proto at run time (@grpc/proto-loader), so it
// needs no generated code: the .proto is the contract. Every call carries the lab's
// bearer token; TLS when PLANKLINE_CA names the gateway's CA (PEM).
//
// Usage (prints one JSON document on stdout):
//   PLANKLINE_ENDPOINT=host:port PLANKLINE_TOKEN=... node client.js models
//   ... node client.js classify roi1.png roi2.jpg
//   ... node client.js watch JOB_ID
// A gRPC error prints {"code": <name>, "details": ...} on stdout and exits 3.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = process.env.PLANKLINE_PROTOS || path.resolve(__dirname, "../../protos");

function connect() {
  const definition = protoLoader.loadSync("plankline/v1/api.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
  });
  const api = grpc.loadPackageDefinition(definition).plankline.v1;
  const endpoint = process.env.PLANKLINE_ENDPOINT || "127.0.0.1:50051";
  const credentials = process.env.PLANKLINE_CA
    ? grpc.credentials.createSsl(fs.readFileSync(process.env.PLANKLINE_CA))
    : grpc.credentials.createInsecure();
  const metadata = new grpc.Metadata();
  if (process.env.PLANKLINE_TOKEN) {
    metadata.set("authorization", `Bearer ${process.env.PLANKLINE_TOKEN}`);
  }
  return { client: new api.Plankline(endpoint, credentials), metadata };
}

function fail(error) {
  const name = Object.keys(grpc.status).find((k) => grpc.status[k] === error.code);
  console.log(JSON.stringify({ code: name || String(error.code), details: error.details }));
  process.exit(3);
}

function deadline(seconds) {
  return { deadline: new Date(Date.now() + seconds * 1000) };
}

function main() {
  const [command, ...args] = process.argv.slice(2);
  const { client, metadata } = connect();
  if (command === "models") {
    client.ListModels({}, metadata, deadline(30), (error, reply) => {
      if (error) return fail(error);
      console.log(JSON.stringify(reply));
    });
  } else if (command === "classify") {
    const images = args.map((file) => ({ id: path.basename(file), data: fs.readFileSync(file) }));
    client.Classify({ images }, metadata, deadline(60), (error, reply) => {
      if (error) return fail(error);
      console.log(JSON.stringify(reply));
    });
  } else if (command === "watch") {
    const events = [];
    const call = client.WatchJob({ job_id: args[0] }, metadata, deadline(120));
    call.on("data", (event) => events.push(event));
    call.on("error", fail);
    call.on("end", () => console.log(JSON.stringify({ events })));
  } else {
    console.error("usage: client.js models | classify FILE... | watch JOB_ID");
    process.exit(2);
  }
}

main();
