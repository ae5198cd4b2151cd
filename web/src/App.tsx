import { useEffect } from "react";
import { useI18n, LANGUAGES } from "./i18n";
import type { Language } from "./i18n";
import { Account } from "./pages/Account";
import { Buy, BuyCanceled, BuySuccess } from "./pages/Buy";
import { Create } from "./pages/Create";
import { Credits } from "./pages/Credits";
import { Gallery, GenerationPage } from "./pages/Gallery";
import { SignIn, SignedIn } from "./pages/SignIn";
import { Link, useRouter } from "./router";
import type { Route } from "./router";
import { useSession } from "./session";
import { useStore } from "./store";

const NAV: {
  href: string;
  key: "nav.create" | "nav.gallery" | "nav.credits" | "nav.buy" | "nav.account";
  pages: Route["page"][];
}[] = [
  { href: "/", key: "nav.create", pages: ["create"] },
  { href: "/gallery", key: "nav.gallery", pages: ["gallery", "generation"] },
  { href: "/credits", key: "nav.credits", pages: ["credits"] },
  { href: "/buy", key: "nav.buy", pages: ["buy", "buySuccess", "buyCanceled"] },
  { href: "/account", key: "nav.account", pages: ["account"] },
];

function Header() {
  const { t, lang, setLang } = useI18n();
  const { route, url } = useRouter();
  const { me } = useSession();
  // Signing in from any page comes back to it.
  const here = url.pathname === "/sign-in" ? null : `${url.pathname}${url.search}`;
  const signInHref =
    here && here !== "/" ? `/sign-in?next=${encodeURIComponent(here)}` : "/sign-in";
  return (
    <header className="header">
      <div className="header-inner">
        <Link href="/" className="brand" aria-label={t("app.name")}>
          <img src="/favicon.svg" alt="" width={28} height={28} />
          <span>{t("app.name")}</span>
        </Link>
        <div className="header-tools">
          {me && (
            <Link
              href="/credits"
              className="balance-chip"
              aria-label={t("nav.balanceLabel", { credits: me.credits })}
              data-testid="header-balance"
            >
              {t(Math.abs(me.credits) === 1 ? "nav.balanceOne" : "nav.balance", {
                credits: me.credits,
              })}
            </Link>
          )}
          <label className="visually-hidden" htmlFor="language">
            {t("nav.language")}
          </label>
          <select
            id="language"
            className="language"
            value={lang}
            onChange={(e) => setLang(e.target.value as Language)}
          >
            {Object.entries(LANGUAGES).map(([code, name]) => (
              <option key={code} value={code}>
                {name}
              </option>
            ))}
          </select>
          {!me && (
            <Link href={signInHref} className="button primary small-button">
              {t("nav.signIn")}
            </Link>
          )}
        </div>
      </div>
      {me && (
        <nav className="nav" aria-label={t("nav.main")}>
          {NAV.map((item) => (
            <Link
              key={item.href}
              href={item.href}
              aria-current={item.pages.includes(route.page) ? "page" : undefined}
            >
              {t(item.key)}
            </Link>
          ))}
        </nav>
      )}
    </header>
  );
}

function Notices() {
  const { notices, dismiss } = useStore();
  const { t } = useI18n();
  return (
    <div className="notices" aria-live="polite">
      {notices.map((notice) => (
        <div
          key={notice.id}
          className={`notice notice-${notice.tone}`}
          role={notice.tone === "error" ? "alert" : "status"}
        >
          <span>{notice.body}</span>
          <button
            type="button"
            className="linklike"
            onClick={() => dismiss(notice.id)}
            aria-label={t("error.dismiss")}
          >
            ×
          </button>
        </div>
      ))}
    </div>
  );
}

function Landing() {
  const { t } = useI18n();
  const { session } = useSession();
  return (
    <div className="landing">
      <section className="hero">
        <h1>{t("landing.title")}</h1>
        <p className="lead">{t("app.tagline")}</p>
        <ul className="points">
          <li>{t("landing.point1")}</li>
          <li>{t("landing.point2")}</li>
          <li>{t("landing.point3")}</li>
        </ul>
        {session.state === "signedOut" && session.reason === "deleted" && (
          <p className="notice notice-success" role="status">
            {t("account.deleted")}
          </p>
        )}
        {session.state === "signedOut" && session.reason === "signedOut" && (
          <p className="notice notice-info" role="status">
            {t("signin.signedOut")}
          </p>
        )}
      </section>
      <SignIn />
    </div>
  );
}

function Page() {
  const { route } = useRouter();
  const { session } = useSession();
  const { t } = useI18n();
  if (session.state === "loading") return <p className="muted">{t("app.loading")}</p>;
  // Pages that need no session.
  if (route.page === "signIn") return session.state === "signedIn" ? <Create /> : <SignIn />;
  if (route.page === "signedIn") return <SignedIn />;
  if (route.page === "buyCanceled") return <BuyCanceled />;
  if (route.page === "buySuccess" && session.state !== "signedIn") return <BuySuccess />;
  if (session.state !== "signedIn") return route.page === "create" ? <Landing /> : <SignIn />;
  switch (route.page) {
    case "create":
      return <Create />;
    case "gallery":
      return <Gallery />;
    case "generation":
      return <GenerationPage id={route.id} />;
    case "credits":
      return <Credits />;
    case "buy":
      return <Buy />;
    case "buySuccess":
      return <BuySuccess />;
    case "account":
      return <Account />;
    case "notFound":
      return <p className="muted">{t("error.notFound")}</p>;
  }
}

export function App() {
  const { t } = useI18n();
  const { route } = useRouter();
  useEffect(() => {
    document.title = t("app.name");
  }, [t]);
  return (
    <>
      <a className="skip" href="#main">
        {t("app.skip")}
      </a>
      <Header />
      <Notices />
      <main id="main" className={`main page-${route.page}`} tabIndex={-1}>
        <Page />
      </main>
      <footer className="footer muted small">{t("app.footer")}</footer>
    </>
  );
}
