// Drives the official @microsoft/signalr client for the end-to-end tests.
// Configuration comes as JSON in the ZIRAAI_SIGNALR_CLIENT environment variable:
//   { url, token, protocol: "json" | "messagepack", skipNegotiation, reconnect, stateful }
// Every observation is printed as one JSON line on stdout; commands arrive on stdin:
//   "invoke <method>"  call a hub method and print the result or the error
//   "stop"             stop the connection and exit
//   "token <jwt>"      the token accessTokenFactory returns from now on (reconnects)
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import readline from "node:readline";

const cfg = JSON.parse(process.env.ZIRAAI_SIGNALR_CLIENT ?? "{}");
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

let builder = new signalR.HubConnectionBuilder()
  .withUrl(cfg.url, {
    accessTokenFactory: () => cfg.token,
    ...(cfg.skipNegotiation ? { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets } : {}),
  })
  .configureLogging(signalR.LogLevel.None);
if (cfg.protocol === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
if (cfg.reconnect) builder = builder.withAutomaticReconnect([0, 200, 500, 1000, 1000, 2000, 2000, 2000, 2000, 2000]);
if (cfg.stateful) builder = builder.withStatefulReconnect();
const connection = builder.build();

for (const target of ["AnalysisCompleted", "AnalysisFailed"]) {
  connection.on(target, (data) => out({ event: "invocation", target, data }));
}
connection.onreconnecting((e) => out({ event: "reconnecting", error: e ? String(e.message ?? e) : null }));
connection.onreconnected((id) => out({ event: "reconnected", connectionId: id }));
connection.onclose((e) => out({ event: "closed", error: e ? String(e.message ?? e) : null }));

try {
  await connection.start();
  out({ event: "connected", connectionId: connection.connectionId });
} catch (e) {
  out({ event: "startFailed", error: String(e.message ?? e) });
  process.exit(0);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  const [cmd, arg] = line.trim().split(/\s+/, 2);
  if (cmd === "invoke") {
    try {
      out({ event: "invoked", result: await connection.invoke(arg) });
    } catch (e) {
      out({ event: "invokeFailed", error: String(e.message ?? e) });
    }
  } else if (cmd === "token") {
    cfg.token = arg;
    out({ event: "tokenSet" });
  } else if (cmd === "stop") {
    await connection.stop();
    process.exit(0);
  }
});
rl.on("close", async () => {
  await connection.stop();
  process.exit(0);
});
