import { defineConfig } from "vite";

// `npm run dev`: Vite on 5173, the API proxied to the local runner (infra/run.sh), so the
// app talks to the same paths as when the runner serves the build itself.
const runner = process.env.RUNNER_URL ?? "http://127.0.0.1:3000";
const proxy = Object.fromEntries(
  ["/v1", "/auth", "/webhooks"].map((path) => [path, { target: runner, changeOrigin: false }]),
);

export default defineConfig({
  server: { port: 5173, strictPort: true, host: "127.0.0.1", proxy },
  preview: { port: 4173, proxy },
  build: {
    target: "es2022",
    sourcemap: false,
    // One small app: a single entry chunk keeps the first page to one script request.
    chunkSizeWarningLimit: 400,
  },
});
