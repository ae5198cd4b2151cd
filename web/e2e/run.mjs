// The browser test: starts the README's run command (infra/run.sh) with Stripe pointed at
// a local fake, then uses the app in Debian's Chromium the way a person would, keeping a
// screenshot of every step under target/web-screenshots/. Any console error, page error
// or failed request that the step did not provoke on purpose fails the run.
//
//   node e2e/run.mjs            (from web/; infra/test.sh runs it)
//   CHROMIUM=/path/to/chromium  another Chromium build
import { createHmac } from "node:crypto";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { deflateSync, crc32 } from "node:zlib";
import { chromium } from "playwright-core";
import { startFakeStripe } from "./fake-stripe.mjs";
import { CHROMIUM_ARGS, freePort, root, startStack, stopStack } from "./stack.mjs";

const shots = join(root, "target", "web-screenshots");
const WEBHOOK_SECRET = "whsec_local_0123456789abcdefghijklmnopqrstuv";
const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };
const STEP_TIMEOUT = 30_000;

/** A real PNG (a small gradient), so the backend decodes it as any upload. */
function png(width, height) {
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x++) {
      row[1 + x * 3] = 255;
      row[2 + x * 3] = Math.round((200 * y) / height);
      row[3 + x * 3] = Math.round((255 * x) / width);
    }
    rows.push(row);
  }
  const chunk = (type, data) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([Buffer.from(type), data])));
    return Buffer.concat([length, Buffer.from(type), data, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

function signStripe(body) {
  const t = Math.floor(Date.now() / 1000);
  const v1 = createHmac("sha256", WEBHOOK_SECRET).update(`${t}.${body}`).digest("hex");
  return `t=${t},v1=${v1}`;
}

function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

async function main() {
  rmSync(shots, { recursive: true, force: true });
  mkdirSync(shots, { recursive: true });
  const stripe = await startFakeStripe();
  const port = await freePort();
  const stack = startStack({
    PORT: String(port),
    MOTO_PORT: String(await freePort()),
    LOG_FORMAT: "json",
    STRIPE_SECRET_KEY: "sk_test_local",
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    STRIPE_BASE_URL: stripe.base,
    STRIPE_PRICE_CREDITS_100: "price_local_credits_100",
    STRIPE_PRICE_CREDITS_500: "price_local_credits_500",
    STRIPE_PRICE_PRO_MONTHLY: "price_local_pro_monthly",
    STRIPE_PRICE_PRO_YEARLY: "price_local_pro_yearly",
    // Each batch waits this long before the worker takes it: long enough for a person
    // (this test) to cancel a generation while it is queued.
    LOCAL_WORKER_DELAY_MS: "2500",
  });
  let browser;
  let steps = 0;
  const started = Date.now();
  try {
    const base = await stack.url;
    // The address a person types: 127.0.0.1, the runner's own origin.
    const app = base.replace("0.0.0.0", "127.0.0.1");
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      headless: true,
      args: CHROMIUM_ARGS,
    });
    steps = await run(browser, app, stripe);
    console.log(`web e2e: every step passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    console.log(`web-e2e: ${steps} passed, 0 failed`);
    console.log(`web e2e: screenshots in ${shots}`);
  } catch (error) {
    writeFileSync(join(shots, "run.log"), stack.log());
    throw error;
  } finally {
    await browser?.close();
    await stopStack(stack.child);
    await stripe.close();
  }
}

async function run(browser, app, stripe) {
  const context = await browser.newContext({ viewport: DESKTOP, locale: "en-US" });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);

  // Everything that goes wrong, unless the step expects exactly that.
  const problems = [];
  let expected = []; // [{ status, path }]
  const isExpected = (status, url) =>
    expected.some((e) => e.status === status && new URL(url).pathname === e.path);
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    const text = message.text();
    const location = message.location()?.url ?? "";
    const status = /status of (\d{3})/.exec(text)?.[1];
    if (status && location && isExpected(Number(status), location)) return;
    problems.push(`console error: ${text} (${location})`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) =>
    problems.push(
      `request failed: ${request.method()} ${request.url()}: ${request.failure()?.errorText}`,
    ),
  );
  page.on("response", (response) => {
    if (response.status() >= 400 && !isExpected(response.status(), response.url()))
      problems.push(`HTTP ${response.status()}: ${response.request().method()} ${response.url()}`);
  });

  let index = 0;
  const step = async (name, body, { phone = false } = {}) => {
    index += 1;
    const label = `${String(index).padStart(2, "0")}-${name}`;
    const t0 = Date.now();
    try {
      await body();
    } catch (error) {
      await page
        .screenshot({ path: join(shots, `${label}-FAILED.png`), fullPage: true })
        .catch(() => {});
      const seen = problems.length ? `\n  also seen:\n  ${problems.join("\n  ")}` : "";
      throw new Error(`step ${label}: ${error.message}${seen}`, { cause: error });
    }
    // A full-page capture shows the page from its top, as a person first sees it.
    await page.evaluate(() => scrollTo(0, 0));
    await page.screenshot({ path: join(shots, `${label}-desktop.png`), fullPage: true });
    if (phone) {
      await page.setViewportSize(PHONE);
      await page.screenshot({ path: join(shots, `${label}-phone.png`), fullPage: true });
      await page.setViewportSize(DESKTOP);
    }
    if (problems.length) throw new Error(`step ${label}:\n  ${problems.join("\n  ")}`);
    console.log(`web e2e: ${label} (${Date.now() - t0} ms)`);
  };

  const headerBalance = async () => {
    const text = await page.getByTestId("header-balance").innerText();
    return Number(/-?\d+/.exec(text)?.[0]);
  };
  const expectBalance = async (credits) => {
    await page
      .getByTestId("header-balance")
      .filter({ hasText: new RegExp(`^${credits} credits?$`) })
      .waitFor();
  };
  const email = `ada-${Date.now()}@example.com`;

  /** The API as a script of the user's calls it (curl's agent), with its own dev session. */
  const SCRIPT_AGENT = "curl/8.5.0";
  const asScript = async () => {
    const login = await fetch(`${app}/auth/dev/login`, {
      method: "POST",
      headers: { "content-type": "application/json", "user-agent": SCRIPT_AGENT },
      body: JSON.stringify({ email, name: "Ada Lovelace" }),
    });
    assert(login.status === 200, `dev login from a script (${login.status})`);
    const { token } = await login.json();
    return async (method, path, body) => {
      const answer = await fetch(`${app}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          "user-agent": SCRIPT_AGENT,
          ...(body ? { "content-type": "application/json" } : {}),
        },
        body: body ? JSON.stringify(body) : undefined,
      });
      const text = await answer.text();
      return { status: answer.status, body: text ? JSON.parse(text) : null };
    };
  };
  /** The security log as the page shows it: each entry's text and time, top first. */
  const securityLog = () => page.getByRole("list", { name: "Security activity" });
  const shownEntries = () =>
    securityLog()
      .getByRole("listitem")
      .evaluateAll((items) =>
        items.map((li) => ({
          text: li.innerText,
          at: li.querySelector("time")?.getAttribute("datetime") ?? "",
        })),
      );
  const signIn = async () => {
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Name").fill("Ada Lovelace");
    await page.getByRole("button", { name: "Sign in", exact: true }).click();
  };

  /** Fills the composer and sends it; returns the new generation's card. */
  const generate = async ({ model, prompt, n = 1 }) => {
    await page.getByRole("radio", { name: model, exact: true }).check();
    await page.getByLabel("Prompt").fill(prompt);
    await page.getByLabel("Images", { exact: true }).selectOption(String(n));
    await page.getByRole("button", { name: /^Generate \(/ }).click();
    const card = page.getByRole("article", { name: prompt });
    await card.first().waitFor();
    return card.first();
  };
  const imageArrives = async (card, prompt) => {
    const image = card.getByRole("img", { name: prompt }).first();
    await image.waitFor({ timeout: 60_000 });
    await image.scrollIntoViewIfNeeded();
    const handle = await image.elementHandle();
    try {
      await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, handle);
    } catch (error) {
      const seen = await handle.evaluate((el) => ({
        src: el.src.slice(0, 120),
        complete: el.complete,
        naturalWidth: el.naturalWidth,
        rect: JSON.stringify(el.getBoundingClientRect()),
        scrollY,
      }));
      throw new Error(`the image of "${prompt}" did not load: ${JSON.stringify(seen)}`, {
        cause: error,
      });
    }
    await card.getByText("Done").waitFor();
  };

  await step(
    "landing",
    async () => {
      const answer = await page.goto(app);
      assert(answer?.headers()["cache-control"] === "no-cache", "index.html is not cached");
      await page
        .getByRole("heading", { name: "Images from words, edits from a picture" })
        .waitFor();
      // Sign-in providers without configuration say so instead of failing.
      assert(
        await page.getByRole("button", { name: "Continue with Google" }).isDisabled(),
        "Google disabled",
      );
      await page.getByText("this site has not set up Google sign-in").waitFor();
    },
    { phone: true },
  );

  await step(
    "signed-in-with-bonus",
    async () => {
      await signIn();
      await page.getByRole("heading", { name: "Create" }).waitFor();
      await expectBalance(10);
      // The price list: every model with its price per image.
      await page.getByRole("radio", { name: "Nano Banana Pro", exact: true }).waitFor();
      await page.getByText("8 credits / image").waitFor();
    },
    { phone: true },
  );

  await step("keyboard-reaches-the-composer", async () => {
    await page.locator("body").click({ position: { x: 1, y: 1 } });
    const reached = new Set();
    for (let i = 0; i < 40; i++) {
      await page.keyboard.press("Tab");
      reached.add(
        await page.evaluate(() => {
          const el = document.activeElement;
          return el
            ? `${el.tagName}:${el.getAttribute("name") ?? el.textContent?.trim().slice(0, 20)}`
            : "";
        }),
      );
    }
    const seen = [...reached].join(" | ");
    assert(seen.includes("INPUT:model"), `a model is reachable by Tab (${seen})`);
    assert(seen.includes("TEXTAREA"), "the prompt is reachable by Tab");
    assert(
      [...reached].some((r) => r.startsWith("BUTTON:Generate")),
      "Generate is reachable by Tab",
    );
  });

  const first = "A banana-yellow vintage car on a rainy street";
  await step(
    "generate-nano-banana",
    async () => {
      const card = await generate({ model: "Nano Banana", prompt: first });
      await expectBalance(8);
      await imageArrives(card, first);
    },
    { phone: true },
  );

  const second = "A lighthouse made of glass at dawn";
  await step("generate-flux-kontext-pro", async () => {
    const card = await generate({ model: "FLUX.1 Kontext [pro]", prompt: second });
    await expectBalance(5);
    await imageArrives(card, second);
  });

  const edited = "Make the sky purple";
  await step("upload-a-png-and-edit-it", async () => {
    const chooser = page.waitForEvent("filechooser");
    await page.getByRole("button", { name: "choose files" }).click();
    await (
      await chooser
    ).setFiles({ name: "sketch.png", mimeType: "image/png", buffer: png(64, 48) });
    await page.getByRole("img", { name: "Reference image 1" }).waitFor();
    await page.getByText("Mode: Image edit").waitFor();
    const card = await generate({ model: "Nano Banana", prompt: edited });
    await expectBalance(3);
    await imageArrives(card, edited);
    await card.getByText("Edited from 1 reference image(s)").waitFor();
  });

  const again = "Now at night, with neon signs";
  await step("edit-a-result", async () => {
    const result = page.getByRole("article", { name: first });
    await result.getByRole("button", { name: "Edit this image" }).first().click();
    await page.getByRole("img", { name: "Reference image 1" }).waitFor();
    const card = await generate({ model: "Nano Banana", prompt: again });
    await expectBalance(1);
    await imageArrives(card, again);
  });

  await step("overspend-shows-402", async () => {
    expected = [{ status: 402, path: "/v1/generations" }];
    await page.getByRole("radio", { name: "Nano Banana Pro", exact: true }).check();
    await page.getByLabel("Prompt").fill("Four portraits of a cat astronaut");
    await page.getByLabel("Images", { exact: true }).selectOption("4");
    await page.getByText("Not enough credits: this costs 16, you have 1.").waitFor();
    const refused = page.waitForResponse(
      (r) => r.url().endsWith("/v1/generations") && r.status() === 402,
    );
    await page.getByRole("button", { name: "Generate (16 credits)" }).click();
    await refused;
    const alert = page.getByRole("alert").filter({ hasText: "Not enough credits for this." });
    await alert.waitFor();
    await alert.getByRole("link", { name: "Buy credits" }).waitFor();
    await expectBalance(1);
    await page.waitForTimeout(300); // the console line of the 402 arrives after the response
    expected = [];
  });

  await step(
    "ledger-adds-up",
    async () => {
      await page
        .getByRole("navigation")
        .getByRole("link", { name: "Credits", exact: true })
        .click();
      await page.getByRole("heading", { name: "History" }).waitFor();
      await page.getByTestId("ledger-total").waitFor();
      const deltas = await page.getByTestId("delta").allInnerTexts();
      const sum = deltas.reduce((s, d) => s + Number(d), 0);
      assert(sum === (await headerBalance()), `ledger ${sum} = balance`);
      assert(deltas.length === 5, `five rows (bonus and four generations), got ${deltas.length}`);
      await page.getByText("adds up to your balance").waitFor();
    },
    { phone: true },
  );

  await step(
    "buy-page",
    async () => {
      await page
        .getByRole("navigation")
        .getByRole("link", { name: "Buy credits", exact: true })
        .click();
      await page.getByRole("heading", { name: "Credit packs" }).waitFor();
    },
    { phone: true },
  );

  await step("checkout-at-the-provider", async () => {
    const pack = page.getByRole("article", { name: "100 credits" });
    await pack.getByRole("button", { name: "Buy" }).click();
    await page.waitForURL(`${stripe.base}/c/pay/*`);
    const sent = stripe.requests.at(-1);
    assert(sent.headers["stripe-version"], "the backend pins Stripe-Version");
    assert(sent.form["line_items[0][price]"] === "price_local_credits_100", "the configured price");
    assert(sent.form.success_url === `${app}/buy/success`, `success_url ${sent.form.success_url}`);
  });

  await step("back-from-checkout-sign-in-again", async () => {
    await page.getByRole("button", { name: "Pay" }).click();
    await page.waitForURL(`${app}/buy/success`);
    // A dev sign-in's token lived in memory only: the page asks for a sign-in again.
    await page.getByRole("main").getByRole("link", { name: "Sign in" }).click();
    await signIn();
    await page.getByText("Waiting for the payment to be confirmed").waitFor();
  });

  await step(
    "webhook-lands-balance-rises",
    async () => {
      const session = [...stripe.sessions.values()].at(-1);
      const body = JSON.stringify({
        id: `evt_local_${Date.now()}`,
        object: "event",
        type: "checkout.session.completed",
        created: Math.floor(Date.now() / 1000),
        data: {
          object: {
            ...session,
            status: "complete",
            payment_status: "paid",
            customer: "cus_local_e2e",
            payment_intent: `pi_local_${Date.now()}`,
          },
        },
      });
      const answer = await fetch(`${app}/webhooks/stripe`, {
        method: "POST",
        headers: { "stripe-signature": signStripe(body), "content-type": "application/json" },
        body,
      });
      assert(answer.status === 200, `webhook accepted (${answer.status})`);
      await page.getByTestId("purchase-arrived").filter({ hasText: "100 credits added" }).waitFor();
      await expectBalance(101);
    },
    { phone: true },
  );

  const canceled = "A hundred lanterns over a lake";
  await step("cancel-a-queued-generation", async () => {
    await page.getByRole("navigation").getByRole("link", { name: "Create", exact: true }).click();
    const card = await generate({ model: "Nano Banana", prompt: canceled, n: 2 });
    await expectBalance(97);
    await card.getByText("Queued").waitFor();
    await card.getByRole("button", { name: "Cancel this generation" }).click();
    await card.getByText("Canceled").waitFor();
    await card.getByText("4 credits refunded").waitFor();
    await expectBalance(101);
  });

  // More entries than one page holds: a webhook secret, eleven API keys made and revoked by
  // a script and a twelfth kept, after whatever the steps above recorded (sign-ins, the
  // purchase).
  const keys = [];
  await step(
    "security-log",
    async () => {
      const send = await asScript();
      const secret = await send("GET", "/v1/webhook-secret");
      assert(secret.status === 200, `webhook secret made (${secret.status})`);
      for (let i = 0; i < 12; i++) {
        const made = await send("POST", "/v1/api-keys", { name: `e2e ${i + 1}` });
        assert(made.status === 201, `API key made (${made.status})`);
        keys.push(made.body);
        if (i === 11) break;
        const revoked = await send("DELETE", `/v1/api-keys/${made.body.id}`);
        assert(revoked.status === 204, `API key revoked (${revoked.status})`);
      }
      const last = keys.at(-1);
      await page
        .getByRole("navigation")
        .getByRole("link", { name: "Account", exact: true })
        .click();
      await page.getByRole("heading", { name: "Security activity" }).waitFor();
      // Newest first: the key made last is on top, with where and what it came from.
      const top = securityLog().getByRole("listitem").first();
      await top.getByText(`API key ${last.prefix} (“e2e 12”) created`).waitFor();
      await top.getByText("IP 127.0.0.1").waitFor();
      await top.getByText(SCRIPT_AGENT.replace("/", " ")).waitFor();
      const firstPage = await shownEntries();
      assert(firstPage.length === 20, `one page of 20 entries, got ${firstPage.length}`);

      // "Show more" by keyboard, until everything is shown.
      await page.getByRole("heading", { name: "Security activity" }).click();
      let focused = "";
      for (let i = 0; i < 10 && focused !== "Show more"; i++) {
        await page.keyboard.press("Tab");
        focused = await page.evaluate(() => document.activeElement?.textContent?.trim() ?? "");
      }
      assert(focused === "Show more", `Tab reaches "Show more" (reached "${focused}")`);
      await page.keyboard.press("Enter");
      await securityLog().getByRole("listitem").nth(20).waitFor();
      const more = page.getByRole("button", { name: "Show more" });
      while (await more.isVisible()) {
        const before = await securityLog().getByRole("listitem").count();
        await more.click();
        await securityLog().getByRole("listitem").nth(before).waitFor();
      }
      await page.getByText("No older activity.").waitFor();

      const all = await shownEntries();
      for (let i = 1; i < all.length; i++)
        assert(
          Date.parse(all[i - 1].at) >= Date.parse(all[i].at),
          `newest first (${all[i - 1].at} before ${all[i].at})`,
        );
      const position = (text) => all.findIndex((e) => e.text.startsWith(text));
      const secretMade = position("Webhook signing secret created");
      const lastKey = all.findLastIndex((e) => e.text.startsWith("API key"));
      assert(secretMade > lastKey, "the webhook secret, made first, is listed below every key");
      for (const [i, key] of keys.entries()) {
        const sentence = `API key ${key.prefix} (“e2e ${i + 1}”) created`;
        const created = position(sentence);
        const times = all.filter((e) => e.text.startsWith(sentence)).length;
        assert(times === 1, `key ${i + 1} made is listed once (${times})`);
        if (i === 11) continue;
        const revoked = position(`API key ${key.prefix} revoked`);
        assert(
          revoked >= 0 && revoked < created,
          `key ${i + 1} revoked is listed above its making`,
        );
      }
    },
    { phone: true },
  );

  await step(
    "gallery",
    async () => {
      await page
        .getByRole("navigation")
        .getByRole("link", { name: "Gallery", exact: true })
        .click();
      await page.getByRole("heading", { name: "Gallery" }).waitFor();
      const images = page.locator(".grid img");
      await images.first().waitFor();
      const lazy = await images.evaluateAll((all) => all.every((img) => img.loading === "lazy"));
      assert(lazy, "gallery images load lazily");
    },
    { phone: true },
  );

  await step("delete-a-generation", async () => {
    const card = page.getByRole("article", { name: second });
    await card.getByRole("link", { name: "Open" }).first().click();
    await page.getByRole("button", { name: "Delete" }).click();
    const dialog = page.getByRole("dialog", { name: "Delete this generation?" });
    await dialog.getByRole("button", { name: "Delete" }).click();
    await page.getByText("Generation deleted.").waitFor();
    await page.getByRole("heading", { name: "Gallery" }).waitFor();
    assert(
      (await page.getByRole("article", { name: second }).count()) === 0,
      "the deleted one is gone",
    );
  });

  await step(
    "switch-to-chinese",
    async () => {
      await page.getByLabel("Language").selectOption("zh-CN");
      await page.getByRole("heading", { name: "作品" }).waitFor();
      await page.getByTestId("header-balance").filter({ hasText: "101 积分" }).waitFor();
      assert((await page.locator("html").getAttribute("lang")) === "zh-CN", "html lang follows");
      await page.getByRole("navigation").getByRole("link", { name: "创作", exact: true }).click();
      await page.getByRole("heading", { name: "创作" }).waitFor();
    },
    { phone: true },
  );

  await step(
    "chinese-credits",
    async () => {
      await page.getByRole("navigation").getByRole("link", { name: "积分", exact: true }).click();
      await page.getByText("与余额一致").waitFor();
    },
    { phone: true },
  );

  await step(
    "chinese-security-log",
    async () => {
      await page.getByRole("navigation").getByRole("link", { name: "账户", exact: true }).click();
      await page.getByRole("heading", { name: "安全活动记录" }).waitFor();
      const top = page.getByRole("list", { name: "安全活动记录" }).getByRole("listitem").first();
      await top.getByText(`已创建 API 密钥 ${keys.at(-1).prefix}（“e2e 12”）`).waitFor();
      await page.getByRole("button", { name: "显示更多" }).waitFor();
    },
    { phone: true },
  );

  await step(
    "delete-the-account",
    async () => {
      await page.getByRole("navigation").getByRole("link", { name: "账户", exact: true }).click();
      await page.getByRole("button", { name: "注销我的账户" }).click();
      const dialog = page.getByRole("dialog", { name: "确定注销账户？" });
      await dialog.getByLabel("输入 DELETE 以确认").fill("DELETE");
      await dialog.getByRole("button", { name: "注销我的账户" }).click();
      await page.getByText("你的账户已注销。").waitFor();
      await page.getByRole("button", { name: "登录", exact: true }).waitFor();
      assert((await page.getByTestId("header-balance").count()) === 0, "no balance once deleted");
    },
    { phone: true },
  );

  await context.close();
  return index;
}

main().catch((error) => {
  console.error(`web e2e: FAILED\n${error.stack ?? error}`);
  process.exit(1);
});
