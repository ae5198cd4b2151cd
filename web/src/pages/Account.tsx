import { useId, useState } from "react";
import { api, call } from "../api/client";
import { Dialog } from "../components/Dialog";
import { ProblemMessage } from "../components/problems";
import { SecurityLog } from "../components/SecurityLog";
import { useI18n } from "../i18n";
import { useRouter } from "../router";
import { useSession } from "../session";

export function Account() {
  const { t, date } = useI18n();
  const { me, signOut, ended } = useSession();
  const { navigate } = useRouter();
  const [confirming, setConfirming] = useState(false);
  const [typed, setTyped] = useState("");
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<unknown>(null);
  const confirmId = useId();
  if (!me) return null;

  const leave = async () => {
    setBusy(true);
    try {
      await signOut();
      navigate("/");
    } catch (error) {
      setProblem(error);
    } finally {
      setBusy(false);
    }
  };

  const remove = async () => {
    setBusy(true);
    try {
      await call(api.DELETE("/v1/me"));
      setConfirming(false);
      ended("deleted");
      navigate("/");
    } catch (error) {
      setProblem(error);
      setConfirming(false);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section aria-labelledby="account-title">
      <h1 id="account-title">{t("account.title")}</h1>
      {problem !== null && (
        <p className="error-text" role="alert">
          <ProblemMessage error={problem} />
        </p>
      )}
      <div className="card">
        <h2>{t("account.profile")}</h2>
        <dl className="facts">
          <dt>{t("account.name")}</dt>
          <dd>{me.name}</dd>
          <dt>{t("account.email")}</dt>
          <dd>{me.email ?? t("date.never")}</dd>
          <dt>{t("account.memberSince")}</dt>
          <dd>{date(me.created_at)}</dd>
        </dl>
        <p className="muted">{t("account.signOutLead")}</p>
        <button type="button" className="button ghost" onClick={() => void leave()} disabled={busy}>
          {t("signin.signOut")}
        </button>
      </div>
      <SecurityLog />
      <div className="card danger-zone">
        <h2>{t("account.danger")}</h2>
        <p>{t("account.dangerLead")}</p>
        <button type="button" className="button danger" onClick={() => setConfirming(true)}>
          {t("account.delete")}
        </button>
      </div>
      <Dialog
        open={confirming}
        title={t("account.deleteTitle")}
        onClose={() => {
          setConfirming(false);
          setTyped("");
        }}
      >
        <p>{t("account.dangerLead")}</p>
        <label htmlFor={confirmId}>{t("account.deleteConfirmLabel")}</label>
        <input
          id={confirmId}
          value={typed}
          onChange={(e) => setTyped(e.target.value)}
          autoComplete="off"
          autoFocus
        />
        <div className="row end">
          <button type="button" className="button ghost" onClick={() => setConfirming(false)}>
            {t("gen.cancel")}
          </button>
          <button
            type="button"
            className="button danger"
            disabled={busy || typed.trim() !== t("account.deleteConfirmWord")}
            onClick={() => void remove()}
          >
            {t("account.delete")}
          </button>
        </div>
      </Dialog>
    </section>
  );
}
