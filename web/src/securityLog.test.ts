import { describe as group, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Product } from "./api/client";
import { TABLES, format } from "./i18n";
import type { Language, Translate } from "./i18n";
import { KNOWN_ACTIONS, actorLabel, describe } from "./securityLog";
import type { AuditAction } from "./securityLog";

const translate =
  (lang: Language): Translate =>
  (key, values) =>
    format(TABLES[lang][key], values);
const en = translate("en");
const zh = translate("zh-CN");

/** The actions the contract lists (openapi.yaml, AuditEntry.action), read from the file. */
function contractActions(): string[] {
  const yaml = readFileSync(join(__dirname, "..", "..", "openapi.yaml"), "utf8");
  const schema = yaml.slice(yaml.indexOf("\n    AuditEntry:"));
  const list = /\n {8}action:[\s\S]*?enum: \[([^\]]+)\]/.exec(schema)?.[1];
  if (!list) throw new Error("openapi.yaml: AuditEntry.action has no enum");
  return list.split(",").map((a) => a.trim());
}

const products: Product[] = [
  {
    id: "credits_100",
    name: "100 credits",
    kind: "one_time",
    interval: null,
    credits: 100,
    price: { amount: 999, currency: "usd" },
    providers: ["stripe"],
  },
];

// What each action's entry usually names, and the sentence a person reads, per language.
const EXAMPLES: Record<AuditAction, { detail: Record<string, unknown>; en: string; zh: string }> = {
  sign_in: {
    detail: { provider: "google" },
    en: "Signed in with Google",
    zh: "通过 Google 登录",
  },
  logout: { detail: {}, en: "Signed out on every device", zh: "已在所有设备上退出登录" },
  account_deleted: { detail: {}, en: "Account deleted", zh: "账户已注销" },
  api_key_created: {
    detail: { key_id: "key_01J9", prefix: "nbk_abcd1234" },
    en: "API key nbk_abcd1234 created",
    zh: "已创建 API 密钥 nbk_abcd1234",
  },
  api_key_revoked: {
    detail: { key_id: "key_01J9", prefix: "nbk_abcd1234" },
    en: "API key nbk_abcd1234 revoked",
    zh: "已撤销 API 密钥 nbk_abcd1234",
  },
  webhook_secret_created: {
    detail: {},
    en: "Webhook signing secret created",
    zh: "已创建 Webhook 签名密钥",
  },
  webhook_secret_rotated: {
    detail: {},
    en: "Webhook signing secret rotated",
    zh: "已轮换 Webhook 签名密钥",
  },
  checkout_started: {
    detail: { provider: "creem", product: "pro_monthly" },
    en: "Checkout started: Pro · monthly with Creem",
    zh: "已通过 Creem 发起结账：Pro · 月付",
  },
  payment_applied: {
    detail: { provider: "stripe", product: "credits_100", credits: 100, event_id: "evt_1" },
    en: "Payment applied: 100 credits via Stripe",
    zh: "付款已入账：100 积分（Stripe）",
  },
  payment_parked: {
    detail: { provider: "stripe", event_id: "evt_1" },
    en: "Payment received via Stripe, on hold until it can be applied",
    zh: "已收到通过 Stripe 的付款，暂未入账，待处理",
  },
  admin_grant: {
    detail: { credits: 50 },
    en: "50 credits granted by an operator",
    zh: "运营人员发放了 50 积分",
  },
  admin_refund: {
    detail: { generation_id: "gen_01J9", credits: 8 },
    en: "Generation gen_01J9 refunded by an operator: 8 credits",
    zh: "运营人员为生成任务 gen_01J9 退还了 8 积分",
  },
  admin_replay: {
    detail: { provider: "stripe", event_id: "evt_1" },
    en: "Stripe payment event evt_1 processed by an operator",
    zh: "运营人员重新处理了 Stripe 付款事件 evt_1",
  },
};

group("the security log's sentence for each action", () => {
  it("has one for every action the contract lists, and no other", () => {
    expect([...KNOWN_ACTIONS].sort()).toEqual(contractActions().sort());
  });

  for (const action of KNOWN_ACTIONS) {
    it(`reads ${action} as a sentence in English and Chinese`, () => {
      const example = EXAMPLES[action];
      const entry = { action, detail: example.detail };
      expect(describe(entry, en, products)).toMatchObject({
        sentence: example.en,
        known: true,
        note: null,
      });
      expect(describe(entry, zh, products).sentence).toBe(example.zh);
    });

    it(`reads ${action} with nothing in its detail, in both languages`, () => {
      for (const t of [en, zh]) {
        const { sentence, known } = describe({ action, detail: {} }, t);
        expect(known).toBe(true);
        expect(sentence).not.toBe(action);
        expect(sentence, "no placeholder left").not.toMatch(/[{}]/);
      }
    });
  }

  it("shows an action this build does not know by its raw name", () => {
    const future = { action: "password_changed" as AuditAction, detail: { any: 1 } };
    expect(describe(future, en)).toEqual({
      sentence: "password_changed",
      known: false,
      note: null,
      ids: [],
    });
    for (const name of ["constructor", "toString", "__proto__"])
      expect(describe({ action: name as AuditAction, detail: {} }, zh).sentence).toBe(name);
  });

  it("takes a detail that is not an object, or holds odd values, as naming nothing", () => {
    const odd = [null, [], "text", 3] as unknown as Record<string, unknown>[];
    for (const detail of odd)
      expect(describe({ action: "payment_applied", detail }, en).sentence).toBe("Payment applied");
    const wrong = { credits: { n: 1 }, provider: 7, prefix: "  " };
    expect(describe({ action: "payment_applied", detail: wrong }, en).sentence).toBe(
      "Payment applied",
    );
    expect(describe({ action: "api_key_created", detail: wrong }, en).sentence).toBe(
      "API key created",
    );
    expect(describe({ action: "payment_applied", detail: { credits: "500" } }, en).sentence).toBe(
      "Payment applied: 500 credits",
    );
  });

  it("names what the detail names, as far as it goes", () => {
    const say = (action: AuditAction, detail: Record<string, unknown>, t = en) =>
      describe({ action, detail }, t, products).sentence;
    expect(say("sign_in", { provider: "dev" })).toBe("Signed in locally (development sign-in)");
    expect(say("sign_in", { provider: "dev" }, zh)).toBe("已通过本地开发登录方式登录");
    expect(say("sign_in", { provider: "facebook" }, zh)).toBe("通过 Facebook 登录");
    expect(say("sign_in", { provider: "weibo" })).toBe("Signed in with weibo");
    expect(say("api_key_created", { prefix: "nbk_abcd1234", name: "CI" })).toBe(
      "API key nbk_abcd1234 (“CI”) created",
    );
    expect(say("checkout_started", { product: "credits_100", provider: "stripe" })).toBe(
      "Checkout started: 100 credits with Stripe",
    );
    expect(say("checkout_started", { product: "credits_9000" })).toBe(
      "Checkout started: credits_9000",
    );
    expect(say("payment_applied", { credits: 1 })).toBe("Payment applied: 1 credit");
    expect(say("payment_applied", { provider: "creem" }, zh)).toBe("通过 Creem 的付款已入账");
    expect(say("admin_grant", { credits: -20 })).toBe("20 credits removed by an operator");
    expect(say("admin_refund", { generation_id: "gen_1" }, zh)).toBe(
      "运营人员为生成任务 gen_1 办理了退款",
    );
    expect(say("admin_replay", { event_id: "evt_9" })).toBe(
      "Payment event evt_9 processed by an operator",
    );
    const long = say("api_key_created", { prefix: "nbk_x", name: "n".repeat(500) });
    expect(long.length).toBeLessThan(120);
  });

  it("marks the identifiers it names, so they can be shown in a code font", () => {
    const key = {
      action: "api_key_created" as const,
      detail: { prefix: "nbk_1bl6lGcl", name: "CI" },
    };
    expect(describe(key, zh).ids).toEqual(["nbk_1bl6lGcl"]);
    const replay = {
      action: "admin_replay" as const,
      detail: { event_id: "evt_9", provider: "stripe" },
    };
    expect(describe(replay, en).ids).toEqual(["evt_9"]);
    expect(describe({ action: "payment_applied", detail: { credits: 5 } }, en).ids).toEqual([]);
  });

  it("adds an operator's reason as a second line", () => {
    const entry = { action: "admin_grant" as const, detail: { credits: 5, reason: "ticket 42" } };
    expect(describe(entry, en).note).toBe("Reason: ticket 42");
    expect(describe(entry, zh).note).toBe("原因：ticket 42");
  });
});

group("who did it", () => {
  it("is not shown for the user themself, and named for anyone else", () => {
    expect(actorLabel("user", en)).toBeNull();
    expect(actorLabel("admin:ada", en)).toBe("By operator ada");
    expect(actorLabel("admin:ada", zh)).toBe("执行者：运营人员 ada");
    expect(actorLabel("admin:", en)).toBe("By an operator");
    expect(actorLabel("stripe", en)).toBe("By Stripe");
    expect(actorLabel("creem", zh)).toBe("执行者：Creem");
    expect(actorLabel("system", en)).toBe("By the system");
    expect(actorLabel("system", zh)).toBe("执行者：系统");
    expect(actorLabel("paypal", en)).toBe("By paypal");
    expect(actorLabel("constructor", en)).toBe("By constructor");
  });
});
