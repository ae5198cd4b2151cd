// The security log's entries as sentences a person reads ("API key nbk_abcd1234 created",
// "Payment applied: 100 credits via Stripe"). `detail` is a small free-form object the
// backend fills per action (API.md: provider, key id and prefix, product, event id,
// credits); every field is optional here, so a missing or odd one gives a shorter sentence,
// never a broken one, and an action this build does not know shows its raw name.
import type { AuditEntry, Product } from "./api/client";
import type { Translate } from "./i18n";

export type AuditAction = AuditEntry["action"];
type Detail = Readonly<Record<string, unknown>>;
type Context = {
  t: Translate;
  products: readonly Product[] | null;
  /** Notes a value as an identifier (shown in a code font), and gives it back. */
  id: (value: string | null) => string | null;
};

/** What the list shows for one entry. */
export type Described = {
  /** The sentence, or the raw action name when `known` is false. */
  sentence: string;
  known: boolean;
  /** A second line (an operator's reason), or null. */
  note: string | null;
  /** The identifiers the sentence names (key prefix, generation, event), as written in it. */
  ids: string[];
};

// Longest text taken from `detail`: it is shown, and a log line should stay a line.
const MAX_TEXT = 80;

/** The first of `names` that holds a non-empty string. */
function text(detail: Detail, ...names: string[]): string | null {
  for (const name of names) {
    const value = detail[name];
    if (typeof value === "string" && value.trim() !== "") {
      const trimmed = value.trim();
      return trimmed.length > MAX_TEXT ? `${trimmed.slice(0, MAX_TEXT - 1)}…` : trimmed;
    }
  }
  return null;
}

/** The first of `names` that holds a whole number (or its digits). */
function whole(detail: Detail, ...names: string[]): number | null {
  for (const name of names) {
    const value = detail[name];
    if (typeof value === "number" && Number.isSafeInteger(value)) return value;
    if (typeof value === "string" && /^-?\d{1,15}$/.test(value)) return Number(value);
  }
  return null;
}

const BRANDS: Readonly<Record<string, string>> = {
  google: "Google",
  facebook: "Facebook",
  one_tap: "Google One Tap",
  google_one_tap: "Google One Tap",
  stripe: "Stripe",
  creem: "Creem",
};

/** A provider's own name, else the id as sent. */
const brand = (id: string): string => (Object.hasOwn(BRANDS, id) ? (BRANDS[id] ?? id) : id);

function provider(detail: Detail): string | null {
  const id = text(detail, "provider");
  return id === null ? null : brand(id);
}

function amount(credits: number, t: Translate): string {
  return t(Math.abs(credits) === 1 ? "security.creditOne" : "security.credits", { credits });
}

/** A product as the buy page names it, else its id. */
function product(detail: Detail, { t, products }: Context): string | null {
  const id = text(detail, "product", "product_id");
  if (id === null) return null;
  if (id === "pro_monthly" || id === "pro_yearly") return t(`buy.plan.${id}`);
  const known = products?.find((p) => p.id === id);
  if (!known) return id;
  return known.kind === "one_time" ? t("buy.credits", { credits: known.credits }) : known.name;
}

/** One sentence per action; the variants follow what `detail` names. */
const SENTENCES: Record<AuditAction, (detail: Detail, context: Context) => string> = {
  sign_in: (d, { t }) => {
    // The local runner's dev sign-in (never deployed) is no provider a person would name.
    if (text(d, "provider") === "dev") return t("security.sign_in.dev");
    const via = provider(d);
    return via ? t("security.sign_in.with", { provider: via }) : t("security.sign_in");
  },
  logout: (_, { t }) => t("security.logout"),
  account_deleted: (_, { t }) => t("security.account_deleted"),
  api_key_created: (d, { t, id }) => {
    const prefix = id(text(d, "prefix"));
    const name = text(d, "name");
    if (prefix && name) return t("security.api_key_created.named", { prefix, name });
    if (prefix) return t("security.api_key_created.prefix", { prefix });
    return t("security.api_key_created");
  },
  api_key_revoked: (d, { t, id }) => {
    const prefix = id(text(d, "prefix"));
    return prefix
      ? t("security.api_key_revoked.prefix", { prefix })
      : t("security.api_key_revoked");
  },
  webhook_secret_created: (_, { t }) => t("security.webhook_secret_created"),
  webhook_secret_rotated: (_, { t }) => t("security.webhook_secret_rotated"),
  checkout_started: (d, context) => {
    const { t } = context;
    const what = product(d, context);
    const via = provider(d);
    if (what && via) return t("security.checkout_started.full", { product: what, provider: via });
    if (what) return t("security.checkout_started.product", { product: what });
    if (via) return t("security.checkout_started.provider", { provider: via });
    return t("security.checkout_started");
  },
  payment_applied: (d, { t }) => {
    const credits = whole(d, "credits");
    const via = provider(d);
    if (credits !== null && via)
      return t("security.payment_applied.full", { amount: amount(credits, t), provider: via });
    if (credits !== null)
      return t("security.payment_applied.amount", { amount: amount(credits, t) });
    if (via) return t("security.payment_applied.provider", { provider: via });
    return t("security.payment_applied");
  },
  payment_parked: (d, { t }) => {
    const via = provider(d);
    return via
      ? t("security.payment_parked.provider", { provider: via })
      : t("security.payment_parked");
  },
  admin_grant: (d, { t }) => {
    const credits = whole(d, "credits");
    if (credits === null || credits === 0) return t("security.admin_grant");
    return credits > 0
      ? t("security.admin_grant.amount", { amount: amount(credits, t) })
      : t("security.admin_grant.taken", { amount: amount(-credits, t) });
  },
  admin_refund: (d, { t, id }) => {
    const generation = id(text(d, "generation_id", "generation"));
    const credits = whole(d, "credits", "refunded_credits");
    const refunded = credits !== null && credits > 0 ? amount(credits, t) : null;
    if (generation && refunded)
      return t("security.admin_refund.full", { generation, amount: refunded });
    if (generation) return t("security.admin_refund.generation", { generation });
    if (refunded) return t("security.admin_refund.amount", { amount: refunded });
    return t("security.admin_refund");
  },
  admin_replay: (d, { t, id }) => {
    const event = id(text(d, "event_id", "event"));
    const via = provider(d);
    if (event && via) return t("security.admin_replay.full", { event, provider: via });
    if (event) return t("security.admin_replay.event", { event });
    if (via) return t("security.admin_replay.provider", { provider: via });
    return t("security.admin_replay");
  },
};

/** The actions this build has a sentence for, in the contract's order. */
export const KNOWN_ACTIONS = Object.keys(SENTENCES) as AuditAction[];

export function describe(
  entry: Pick<AuditEntry, "action" | "detail">,
  t: Translate,
  products: readonly Product[] | null = null,
): Described {
  // The contract may grow an action before this build knows it: the type says the list,
  // the wire may carry more.
  const action: string = entry.action;
  const raw: unknown = entry.detail;
  const detail: Detail =
    typeof raw === "object" && raw !== null && !Array.isArray(raw) ? (raw as Detail) : {};
  const reason = text(detail, "reason");
  const note = reason ? t("security.reason", { reason }) : null;
  if (!Object.hasOwn(SENTENCES, action)) return { sentence: action, known: false, note, ids: [] };
  const ids: string[] = [];
  const id = (value: string | null) => {
    if (value !== null) ids.push(value);
    return value;
  };
  const sentence = SENTENCES[action as AuditAction](detail, { t, products, id });
  // An identifier the sentence did not use (a variant without it) is not marked.
  return { sentence, known: true, note, ids: ids.filter((v) => sentence.includes(v)) };
}

/** Who did it, when it was not the account's owner; null for the user themself. */
export function actorLabel(actor: string, t: Translate): string | null {
  if (actor === "user") return null;
  if (actor === "system") return t("security.by.system");
  if (actor.startsWith("admin:")) {
    const name = actor.slice("admin:".length).trim();
    return name ? t("security.by.admin", { name }) : t("security.by.operator");
  }
  return t("security.by", { name: brand(actor) });
}
