// What the browser test and the page-load measurement share: the README's run command on
// free ports, and Chromium as this machine runs it.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

// Debian's chromium on a machine whose only network is loopback: no background
// connections, no first-run work (playwright-core gives each launch a fresh profile).
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export /** Starts infra/run.sh; resolves with its URL once the runner prints where it listens. */
function startStack(env) {
  const child = spawn("bash", [join(root, "infra", "run.sh")], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  const url = new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`infra/run.sh did not start:\n${log}`)),
      600_000,
    );
    child.stdout.on("data", (chunk) => {
      log += chunk;
      const found = /local-runner listening on (http:\/\/\S+)/.exec(log);
      if (found) {
        clearTimeout(timer);
        resolve(found[1]);
      }
    });
    child.stderr.on("data", (chunk) => {
      log += chunk;
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`infra/run.sh exited (${code}):\n${log.slice(-4000)}`));
    });
  });
  return { child, url, log: () => log };
}

export function stopStack(child) {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolve();
    }, 15_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    // run.sh traps TERM and stops the runner and the emulator it started.
    child.kill("SIGTERM");
  });
}
