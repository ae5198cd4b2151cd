import { ApiProblem } from "../api/client";
import type { Translate } from "../i18n";
import { useI18n } from "../i18n";
import { Link } from "../router";

/** The sentence a person needs for a failed request (never a stack trace or a code alone). */
export function problemText(error: unknown, t: Translate): string {
  if (!(error instanceof ApiProblem)) return t("error.server");
  switch (error.code) {
    case "network":
      return t("error.network");
    case "insufficient_credits":
      return t("error.insufficient");
    case "rate_limited":
      return error.retryAfter !== null
        ? t("error.rateLimited", { seconds: error.retryAfter })
        : t("error.rateLimitedSoon");
    case "validation_failed":
      return t("error.validation", {
        fields: error.fieldErrors.map((f) => `${f.field}: ${f.message}`).join("; "),
      });
    case "idempotency_key_reused":
      return t("error.conflict");
    case "already_subscribed":
      return t("buy.alreadySubscribed");
    case "unavailable":
      return t("error.unavailable");
    case "not_found":
      return t("error.notFound");
    case "upload_failed":
      return t("error.uploadFailed");
  }
  if (error.status >= 500) return t("error.server");
  return t("error.generic", { code: error.code });
}

/** A problem as a message, with the way out where there is one (402: buy credits). */
export function ProblemMessage({ error }: { error: unknown }) {
  const { t } = useI18n();
  const insufficient = error instanceof ApiProblem && error.code === "insufficient_credits";
  return (
    <span>
      {problemText(error, t)}
      {insufficient && (
        <>
          {" "}
          <Link href="/buy">{t("error.buyLink")}</Link>
        </>
      )}
    </span>
  );
}
