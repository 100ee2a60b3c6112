// Drives the gateway's /demo page in Debian's headless chromium through puppeteer-core
// (which never downloads a browser), for tests/e2e/demo_page.rs.
//
// Configuration: env ZIRAAI_DEMO_PAGE = {"url": "http://…/demo", "chromium": "/usr/bin/chromium",
// "profile": "<fresh temp dir>"} (the test owns the profile dir and removes it; without
// one this script makes and removes its own).
// Prints one JSON line per answer on stdout; reads one command per line on stdin:
//   snapshot   → {"event":"snapshot","status":{…},"device":"…","cards":[…],"injected":n}
//   reload     → {"event":"reloaded"}
//   quit       → closes the browser and exits
// Every browser call is bounded (launch, navigation, protocol calls).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import puppeteer from "puppeteer-core";

const cfg = JSON.parse(process.env.ZIRAAI_DEMO_PAGE ?? "{}");
const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");

const ownProfile = !cfg.profile;
const profile = cfg.profile ?? await mkdtemp(join(tmpdir(), "ziraai-chromium-"));
let browser;

async function quit(code) {
  try { await browser?.close(); } catch (_) { /* already gone */ }
  if (ownProfile) await rm(profile, { recursive: true, force: true });
  process.exit(code);
}

try {
  browser = await puppeteer.launch({
    executablePath: cfg.chromium,
    headless: false, // the flags below say it; Debian's chromium 156 only has the new headless
    // A pipe instead of a port: when this process dies, chromium sees the pipe close and exits.
    pipe: true,
    userDataDir: profile,
    timeout: 30_000,
    protocolTimeout: 15_000,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
} catch (e) {
  say({ event: "launchFailed", error: String(e) });
  await quit(1);
}

const page = await browser.newPage();
page.setDefaultTimeout(15_000);
page.on("console", (m) => process.stderr.write(`[page ${m.type()}] ${m.text()}\n`));
// A dialog would block the page: dismiss it and report it (only injected markup opens one).
page.on("dialog", async (d) => {
  say({ event: "dialog", message: d.message() });
  await d.dismiss().catch(() => {});
});
page.on("pageerror", (e) => say({ event: "pageError", error: String(e) }));
page.on("requestfailed", (r) => {
  // Sockets that fail while the gateway restarts are expected; anything else is not.
  if (!r.url().includes("/ws?")) say({ event: "requestFailed", url: r.url(), error: r.failure()?.errorText });
});

try {
  await page.goto(cfg.url, { waitUntil: "domcontentloaded", timeout: 15_000 });
  say({ event: "opened" });
} catch (e) {
  say({ event: "openFailed", error: String(e) });
  await quit(1);
}

// What a person sees, read from the DOM only.
function snapshot() {
  const text = (root, sel) => root.querySelector(sel)?.textContent ?? null;
  const status = document.getElementById("status");
  return {
    status: { state: status.dataset.state, text: status.textContent },
    banner: document.getElementById("banner").textContent,
    device: document.getElementById("device").textContent,
    storedDevice: localStorage.getItem("ziraai.demo.deviceId"),
    // Elements that event data could only have created through HTML parsing.
    injected: document.querySelectorAll("#cards img, #cards script, #cards b, #cards i").length,
    cards: Array.from(document.querySelectorAll("#cards > article.card"), (c) => ({
      seq: Number(c.dataset.seq),
      kind: c.dataset.kind,
      source: c.dataset.source,
      failed: c.classList.contains("failed"),
      plant: text(c, ".plant"),
      finding: text(c, ".finding"),
      confidence: text(c, ".confidence .value"),
      errorCode: text(c, ".error .code"),
      errorMessage: text(c, ".error .message"),
      ago: text(c, ".ago"),
      raw: text(c, "details pre"),
    })),
  };
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const cmd = line.trim();
  try {
    if (cmd === "snapshot") {
      say({ event: "snapshot", ...(await page.evaluate(snapshot)) });
    } else if (cmd === "reload") {
      await page.reload({ waitUntil: "domcontentloaded", timeout: 15_000 });
      say({ event: "reloaded" });
    } else if (cmd === "quit") {
      break;
    } else {
      say({ event: "error", error: `unknown command ${cmd}` });
    }
  } catch (e) {
    say({ event: "error", error: String(e) });
  }
}
await quit(0);
