import { useEffect, useState } from "react";
import { ApiProblem, api, call } from "../api/client";
import type { PaymentProvider, Product } from "../api/client";
import { ProblemMessage } from "../components/problems";
import { useI18n } from "../i18n";
import { Link } from "../router";
import { useSession } from "../session";
import { useStore } from "../store";

// What the success page needs to recognise the purchase once the webhook has landed.
const PENDING = "nb.checkout";
type Pending = { product_id: string; started_at: string };

const PROVIDER_NAMES: Record<PaymentProvider, string> = { stripe: "Stripe", creem: "Creem" };

function ProductCard({ product }: { product: Product }) {
  const { t, money } = useI18n();
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<unknown>(null);
  const subscription = product.kind === "subscription";
  const amount =
    product.interval === "month"
      ? t("buy.perMonth", { credits: product.credits })
      : product.interval === "year"
        ? t("buy.perYear", { credits: product.credits })
        : t("buy.credits", { credits: product.credits });

  const checkout = async (provider: PaymentProvider) => {
    setBusy(true);
    setProblem(null);
    try {
      const session = await call(
        api.POST("/v1/checkout", {
          body: {
            product_id: product.id,
            provider,
            success_url: `${location.origin}/buy/success`,
            cancel_url: `${location.origin}/buy/canceled`,
          },
        }),
      );
      const pending: Pending = { product_id: product.id, started_at: new Date().toISOString() };
      sessionStorage.setItem(PENDING, JSON.stringify(pending));
      location.assign(session.url);
    } catch (error) {
      setProblem(error);
      setBusy(false);
    }
  };

  return (
    <article className="card product" aria-labelledby={`product-${product.id}`}>
      {(product.id === "pro_monthly" || product.id === "pro_yearly") && (
        <p className="eyebrow">{t(`buy.plan.${product.id}`)}</p>
      )}
      <h3 id={`product-${product.id}`}>{amount}</h3>
      <p className="price">{money(product.price.amount, product.price.currency)}</p>
      {product.providers.length === 0 ? (
        <p className="muted small">{t("buy.notSold")}</p>
      ) : (
        <div className="row wrap">
          {product.providers.map((provider) => (
            <button
              key={provider}
              type="button"
              className="button primary"
              disabled={busy}
              onClick={() => void checkout(provider)}
            >
              {subscription ? t("buy.subscribe") : t("buy.buy")}
              {product.providers.length > 1 &&
                ` ${t("buy.with", { provider: PROVIDER_NAMES[provider] })}`}
            </button>
          ))}
        </div>
      )}
      {busy && <p className="muted small">{t("buy.redirecting")}</p>}
      {problem !== null && (
        <p className="error-text" role="alert">
          <ProblemMessage error={problem} />
        </p>
      )}
    </article>
  );
}

function Plan() {
  const { t, date } = useI18n();
  const { me } = useSession();
  const [problem, setProblem] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const subscription = me?.subscription;
  if (!subscription) return null;
  const portal = async () => {
    setBusy(true);
    try {
      const session = await call(api.POST("/v1/billing/portal"));
      location.assign(session.url);
    } catch (error) {
      setProblem(error);
      setBusy(false);
    }
  };
  return (
    <section className="card plan" aria-labelledby="plan-title">
      <h2 id="plan-title">{t("buy.current")}</h2>
      <p>
        <strong>{subscription.product_id}</strong> ·{" "}
        {t("buy.status", { status: subscription.status })}
      </p>
      <p className="muted">
        {subscription.cancel_at_period_end
          ? t("buy.ends", { date: date(subscription.current_period_end) })
          : t("buy.renews", { date: date(subscription.current_period_end) })}
      </p>
      <button type="button" className="button ghost" onClick={() => void portal()} disabled={busy}>
        {t("buy.manage")}
      </button>
      {problem !== null && (
        <p className="error-text" role="alert">
          <ProblemMessage error={problem} />
        </p>
      )}
    </section>
  );
}

export function Buy() {
  const { t } = useI18n();
  const { products } = useStore();
  const packs = (products ?? []).filter((p) => p.kind === "one_time");
  const plans = (products ?? []).filter((p) => p.kind === "subscription");
  return (
    <section aria-labelledby="buy-title">
      <h1 id="buy-title">{t("buy.title")}</h1>
      <p className="muted">{t("buy.lead")}</p>
      <Plan />
      {products === null ? (
        <p className="muted">{t("app.loading")}</p>
      ) : (
        <>
          <h2>{t("buy.oneTime")}</h2>
          <div className="products">
            {packs.map((p) => (
              <ProductCard key={p.id} product={p} />
            ))}
          </div>
          <h2>{t("buy.plans")}</h2>
          <div className="products">
            {plans.map((p) => (
              <ProductCard key={p.id} product={p} />
            ))}
          </div>
        </>
      )}
    </section>
  );
}

function readPending(): Pending | null {
  try {
    const value: unknown = JSON.parse(sessionStorage.getItem(PENDING) ?? "null");
    if (value && typeof value === "object" && "started_at" in value) return value as Pending;
  } catch {
    // Nothing usable: the page then only waits for the balance to be read.
  }
  return null;
}

/** Back from checkout: waits (a minute at most) for the webhook's grant to show. */
export function BuySuccess() {
  const { t } = useI18n();
  const { me, refresh, session } = useSession();
  const [arrived, setArrived] = useState<number | null>(null);
  const [slow, setSlow] = useState(false);
  const signedIn = session.state === "signedIn";

  useEffect(() => {
    if (!signedIn) return;
    const pending = readPending();
    const since = pending ? Date.parse(pending.started_at) - 60_000 : Date.now() - 10 * 60_000;
    let live = true;
    let timer = 0;
    const started = Date.now();
    const check = async () => {
      try {
        const page = await call(api.GET("/v1/me/ledger", { params: { query: { limit: 20 } } }));
        const grant = page.items.find(
          (row) =>
            (row.reason === "purchase" || row.reason === "subscription") &&
            Date.parse(row.created_at) >= since,
        );
        if (!live) return;
        if (grant) {
          sessionStorage.removeItem(PENDING);
          setArrived(grant.delta);
          await refresh();
          return;
        }
      } catch (error) {
        if (error instanceof ApiProblem && error.status === 401) return;
      }
      if (!live) return;
      if (Date.now() - started > 60_000) setSlow(true);
      else timer = window.setTimeout(() => void check(), 1500);
    };
    void check();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [signedIn, refresh]);

  return (
    <section className="card narrow" aria-live="polite">
      <h1>{t("buy.success")}</h1>
      {!signedIn ? (
        <p>
          {t("buy.signInToSee")} <Link href="/sign-in?next=/buy/success">{t("nav.signIn")}</Link>
        </p>
      ) : arrived !== null && me ? (
        <p className="success-text" data-testid="purchase-arrived">
          {t("buy.arrived", { credits: arrived, balance: me.credits })}
        </p>
      ) : slow ? (
        <p className="muted">{t("buy.slow")}</p>
      ) : (
        <p className="muted">
          <span className="spinner" aria-hidden="true" /> {t("buy.waiting")}
        </p>
      )}
      <p>
        <Link href="/">{t("nav.create")}</Link> · <Link href="/credits">{t("nav.credits")}</Link>
      </p>
    </section>
  );
}

export function BuyCanceled() {
  const { t } = useI18n();
  return (
    <section className="card narrow">
      <h1>{t("buy.canceled")}</h1>
      <p>
        <Link href="/buy">{t("buy.title")}</Link>
      </p>
    </section>
  );
}
