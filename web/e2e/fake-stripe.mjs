// A local stand-in for Stripe's API and its hosted checkout page: `POST
// /v1/checkout/sessions` answers in Stripe's documented shape (a `checkout.session` with
// its `url`), the page at that URL sends the browser back to the session's `success_url`
// when "Pay" is pressed. The test reads what the backend sent from `sessions`.
import { createServer } from "node:http";
import { randomBytes } from "node:crypto";

export async function startFakeStripe() {
  const sessions = new Map();
  const requests = [];
  let base = "";

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", base);
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      if (req.method === "POST" && url.pathname === "/v1/checkout/sessions") {
        const form = Object.fromEntries(new URLSearchParams(body));
        requests.push({ headers: req.headers, form });
        if (req.headers.authorization !== "Bearer sk_test_local") {
          res.writeHead(401, { "content-type": "application/json" });
          res.end(
            JSON.stringify({
              error: { type: "invalid_request_error", message: "Invalid API Key provided" },
            }),
          );
          return;
        }
        const id = `cs_test_${randomBytes(12).toString("hex")}`;
        const session = {
          id,
          object: "checkout.session",
          mode: form.mode,
          status: "open",
          payment_status: "unpaid",
          client_reference_id: form.client_reference_id ?? null,
          customer: null,
          customer_email: form.customer_email ?? null,
          metadata: {
            user_id: form["metadata[user_id]"],
            product_id: form["metadata[product_id]"],
          },
          success_url: form.success_url,
          cancel_url: form.cancel_url,
          url: `${base}/c/pay/${id}`,
          amount_total: 999,
          currency: "usd",
          livemode: false,
        };
        sessions.set(id, session);
        res.writeHead(200, { "content-type": "application/json", "request-id": `req_${id}` });
        res.end(JSON.stringify(session));
        return;
      }
      const pay = /^\/c\/pay\/(cs_test_[0-9a-f]+)$/.exec(url.pathname);
      const session = pay ? sessions.get(pay[1]) : undefined;
      if (req.method === "GET" && session) {
        res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
        res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Checkout (local fake)</title>
<link rel="icon" href="data:,"></head>
<body style="font-family:system-ui;max-width:420px;margin:3rem auto;padding:1rem">
<h1>Test checkout</h1><p>Stand-in for Stripe Checkout: no card is charged.</p>
<p>${session.metadata.product_id} · $9.99</p>
<form method="post"><button type="submit" style="font-size:1.1rem;padding:.6rem 1.2rem">Pay</button></form>
<p><a href="${session.cancel_url}">Cancel</a></p></body></html>`);
        return;
      }
      if (req.method === "POST" && session) {
        session.status = "complete";
        session.payment_status = "paid";
        res.writeHead(303, {
          location: session.success_url.replace("{CHECKOUT_SESSION_ID}", session.id),
        });
        res.end();
        return;
      }
      res.writeHead(404, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          error: { type: "invalid_request_error", message: "Unrecognized request URL" },
        }),
      );
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${server.address().port}`;
  return { base, sessions, requests, close: () => new Promise((r) => server.close(r)) };
}
