import { useEffect, useId, useRef, useState } from "react";
import type { FormEvent } from "react";
import { API_BASE, api, call } from "../api/client";
import type { SignInOption } from "../api/client";
import { ProblemMessage } from "../components/problems";
import { useI18n } from "../i18n";
import { useRouter } from "../router";
import { useSession } from "../session";

/** Only app paths: `next` never sends anyone off the site. */
export function safeNext(next: string | null): string {
  return next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
}

const NAMES = { google: "Google", facebook: "Facebook" } as const;

export function SignIn() {
  const { t } = useI18n();
  const { url, navigate } = useRouter();
  const { session, signedInWithToken } = useSession();
  const [options, setOptions] = useState<SignInOption[] | null>(null);
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<unknown>(null);
  const emailId = useId();
  const nameId = useId();
  const next = safeNext(url.searchParams.get("next"));
  const authError = url.searchParams.get("auth_error");

  useEffect(() => {
    call(api.GET("/auth/providers"))
      .then((answer) => setOptions(answer.items))
      .catch((error) => {
        setOptions([]);
        setProblem(error);
      });
  }, []);

  const available = (id: SignInOption["id"]) =>
    options?.find((o) => o.id === id)?.available ?? false;

  const devSignIn = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setProblem(null);
    try {
      const answer = await call(
        api.POST("/auth/dev/login", { body: { email: email.trim(), name: name.trim() } }),
      );
      signedInWithToken(answer.token, answer.user);
      navigate(next, true);
    } catch (error) {
      setProblem(error);
    } finally {
      setBusy(false);
    }
  };

  const back = `${location.origin}/signed-in?next=${encodeURIComponent(next)}`;
  const loginUrl = (provider: "google" | "facebook") =>
    `${API_BASE}/auth/${provider}/login?redirect_to=${encodeURIComponent(back)}`;

  return (
    <section className="card narrow signin" aria-labelledby="signin-title">
      <h1 id="signin-title">{t("signin.title")}</h1>
      <p className="muted">{t("signin.lead")}</p>
      {session.state === "signedOut" && session.reason === "expired" && (
        <p className="warning">{t("signin.expired")}</p>
      )}
      {authError && <p className="error-text">{t("signin.error", { code: authError })}</p>}
      {options === null ? (
        <p className="muted">{t("app.loading")}</p>
      ) : (
        <>
          <div className="providers">
            {(["google", "facebook"] as const).map((provider) =>
              available(provider) ? (
                <a
                  key={provider}
                  className={`button provider ${provider}`}
                  href={loginUrl(provider)}
                >
                  {t(`signin.${provider}`)}
                </a>
              ) : (
                <div key={provider} className="provider-off">
                  <button
                    type="button"
                    className={`button provider ${provider}`}
                    disabled
                    aria-describedby={`${provider}-off`}
                  >
                    {t(`signin.${provider}`)}
                  </button>
                  <p id={`${provider}-off`} className="muted small">
                    {t("signin.notConfigured", { provider: NAMES[provider] })}
                  </p>
                </div>
              ),
            )}
          </div>
          {available("dev") && (
            <form className="dev" onSubmit={(e) => void devSignIn(e)}>
              <h2>{t("signin.dev")}</h2>
              <p className="muted small">{t("signin.devLead")}</p>
              <div className="field">
                <label htmlFor={emailId}>{t("signin.email")}</label>
                <input
                  id={emailId}
                  type="email"
                  required
                  autoComplete="email"
                  value={email}
                  onChange={(e) => setEmail(e.target.value)}
                />
              </div>
              <div className="field">
                <label htmlFor={nameId}>{t("signin.name")}</label>
                <input
                  id={nameId}
                  autoComplete="name"
                  maxLength={100}
                  value={name}
                  onChange={(e) => setName(e.target.value)}
                />
              </div>
              <button type="submit" className="button primary wide" disabled={busy}>
                {busy ? t("signin.signingIn") : t("signin.submit")}
              </button>
            </form>
          )}
          {!options.some((o) => o.available) && (
            <p className="warning">{t("signin.noneAvailable")}</p>
          )}
        </>
      )}
      {problem !== null && (
        <p className="error-text" role="alert">
          <ProblemMessage error={problem} />
        </p>
      )}
    </section>
  );
}

/** Where Google and Facebook send the browser back to, with the session cookie set. */
export function SignedIn() {
  const { t } = useI18n();
  const { url, navigate } = useRouter();
  const { signedInWithCookie } = useSession();
  const next = safeNext(url.searchParams.get("next"));
  const authError = url.searchParams.get("auth_error");
  const [problem, setProblem] = useState<unknown>(null);
  const started = useRef(false);
  useEffect(() => {
    if (started.current) return;
    started.current = true;
    if (authError) {
      // The provider said no: back to the sign-in page, which explains it.
      const query = new URLSearchParams({ auth_error: authError, next });
      navigate(`/sign-in?${query.toString()}`, true);
      return;
    }
    signedInWithCookie()
      .then(() => navigate(next, true))
      .catch(setProblem);
  }, [signedInWithCookie, navigate, next, authError]);
  return (
    <section className="card narrow">
      {problem !== null ? (
        <p className="error-text">
          <ProblemMessage error={problem} />
        </p>
      ) : (
        <p className="muted">{t("app.loading")}</p>
      )}
    </section>
  );
}
