// Measures what the first page costs: the JavaScript it ships (gzipped, as served from
// web/dist) and, from Chromium's performance timeline, first contentful paint and
// time-to-interactive of `/` on the local stack (infra/run.sh), cold (empty cache, new
// profile) and warm (second load). Prints a table and writes target/web-perf.json.
//
//   node e2e/perf.mjs [RUNS]     (from web/; default 7 runs of each)
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";
import { CHROMIUM_ARGS, freePort, root, startStack, stopStack } from "./stack.mjs";

const runs = Number(process.argv[2] ?? 7);
const dist = join(root, "web", "dist");

/** The scripts index.html loads up front (entry and preloads), gzipped at level 9. */
function firstPageJs() {
  const html = readFileSync(join(dist, "index.html"), "utf8");
  const files = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+\.js)"/g)].map((m) => m[1]);
  const sizes = files.map((file) => {
    const bytes = readFileSync(join(dist, file));
    return { file, raw: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
  });
  return {
    files: sizes,
    raw: sizes.reduce((s, f) => s + f.raw, 0),
    gzip: sizes.reduce((s, f) => s + f.gzip, 0),
  };
}

// In the page, before any script: long tasks and the moment the sign-in form can be used.
const OBSERVE = () => {
  window.__longTasks = [];
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries())
      window.__longTasks.push({ start: entry.startTime, end: entry.startTime + entry.duration });
  }).observe({ type: "longtask", buffered: true });
};

/**
 * Time-to-interactive as Lighthouse defines it, from the timeline: after first contentful
 * paint, the end of the last long task before a 5 s window without one (FCP itself, or
 * DOMContentLoaded if later, when there is none); the app's own "usable" moment beside it
 * (its sign-in button rendered and enabled).
 */
async function measure(page, url) {
  const started = Date.now();
  await page.goto(url, { waitUntil: "load" });
  await page.getByRole("button", { name: "Sign in", exact: true }).waitFor();
  const usable = await page.evaluate(() => performance.now());
  await page.waitForTimeout(5000);
  return page.evaluate(
    ({ usable, wall }) => {
      const paint = performance.getEntriesByName("first-contentful-paint")[0];
      const nav = performance.getEntriesByType("navigation")[0];
      const fcp = paint ? paint.startTime : NaN;
      const tasks = window.__longTasks.filter((t) => t.end > fcp);
      let tti = Math.max(fcp, nav.domContentLoadedEventEnd);
      for (const task of tasks) if (task.start - tti < 5000) tti = Math.max(tti, task.end);
      return {
        fcp,
        tti,
        usable,
        domContentLoaded: nav.domContentLoadedEventEnd,
        load: nav.loadEventEnd,
        longTasks: tasks.length,
        transferred: performance
          .getEntriesByType("resource")
          .concat([nav])
          .reduce((s, e) => s + (e.transferSize ?? 0), 0),
        wall,
      };
    },
    { usable, wall: Date.now() - started },
  );
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

async function main() {
  const js = firstPageJs();
  const stack = startStack({ PORT: String(await freePort()), MOTO_PORT: String(await freePort()) });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
  });
  const cold = [];
  const warm = [];
  try {
    const url = (await stack.url).replace("0.0.0.0", "127.0.0.1") + "/";
    for (let i = 0; i < runs; i++) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
      await context.addInitScript(OBSERVE);
      const page = await context.newPage();
      cold.push(await measure(page, url));
      warm.push(await measure(page, url));
      await context.close();
    }
  } finally {
    await browser.close();
    await stopStack(stack.child);
  }
  const summary = (list) => ({
    fcp_ms: Math.round(median(list.map((r) => r.fcp))),
    tti_ms: Math.round(median(list.map((r) => r.tti))),
    usable_ms: Math.round(median(list.map((r) => r.usable))),
    long_tasks: median(list.map((r) => r.longTasks)),
    transferred_bytes: median(list.map((r) => r.transferred)),
  });
  const report = {
    date: new Date().toISOString(),
    commit: execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root }).toString().trim(),
    chromium: execFileSync(process.env.CHROMIUM ?? "/usr/bin/chromium", ["--version"], {
      stdio: ["ignore", "pipe", "ignore"],
    })
      .toString()
      .trim(),
    runs,
    first_page_js: js,
    cold: summary(cold),
    warm: summary(warm),
    raw: { cold, warm },
  };
  mkdirSync(join(root, "target"), { recursive: true });
  writeFileSync(join(root, "target", "web-perf.json"), JSON.stringify(report, null, 2));
  const kb = (n) => (n / 1024).toFixed(1);
  console.log(
    `first page JavaScript: ${kb(js.gzip)} KB gzipped (${kb(js.raw)} KB raw), ${js.files.length} file(s)`,
  );
  console.log(`median of ${runs}      FCP      TTI      usable   long tasks   transferred`);
  for (const [name, s] of [
    ["cold", report.cold],
    ["warm", report.warm],
  ])
    console.log(
      `${name.padEnd(16)} ${String(s.fcp_ms).padStart(5)} ms ${String(s.tti_ms).padStart(5)} ms ${String(s.usable_ms).padStart(5)} ms ${String(s.long_tasks).padStart(6)}       ${kb(s.transferred_bytes)} KB`,
    );
  console.log(`(written to target/web-perf.json)`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
