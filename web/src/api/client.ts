// The one API client: types generated from openapi.yaml (`npm run gen:api`), so a contract
// change the app does not follow fails the type check.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.gen";

type Schemas = components["schemas"];
export type Me = Schemas["Me"];
export type Model = Schemas["Model"];
export type Generation = Schemas["Generation"];
export type GenerationImage = Schemas["GenerationImage"];
export type LedgerEntry = Schemas["LedgerEntry"];
export type AuditEntry = Schemas["AuditEntry"];
export type Product = Schemas["Product"];
export type PaymentProvider = Schemas["PaymentProvider"];
export type Problem = Schemas["Problem"];
export type FieldError = Schemas["FieldError"];
export type CreateGeneration = Schemas["CreateGenerationRequest"];
export type UploadContentType = Schemas["CreateUploadRequest"]["content_type"];
export type SignInOption = Schemas["SignInOptions"]["items"][number];

/** Where the API is: the same origin locally (the runner serves both), else the build's. */
export const API_BASE: string = (import.meta.env.VITE_API_URL ?? "").replace(/\/$/, "");

// A dev or One Tap sign-in's token lives here only (never in storage): a reload forgets
// it. Cookie sessions (Google, Facebook) need nothing here; the browser sends the cookie.
let token: string | null = null;

export function setToken(value: string | null): void {
  token = value;
}

export function hasToken(): boolean {
  return token !== null;
}

export const api = createClient<paths>({ baseUrl: API_BASE, credentials: "include" });

api.use({
  onRequest({ request }) {
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
});

/** A problem answer (RFC 9457) or a network failure, as something the UI can explain. */
export class ApiProblem extends Error {
  readonly status: number;
  readonly code: string;
  readonly detail: string | undefined;
  readonly fieldErrors: FieldError[];
  /** Seconds, from `Retry-After` (429). */
  readonly retryAfter: number | null;

  constructor(status: number, problem: Partial<Problem>, retryAfter: number | null = null) {
    super(problem.detail ?? problem.title ?? `HTTP ${status}`);
    this.status = status;
    this.code = problem.code ?? (status === 0 ? "network" : "unknown");
    this.detail = problem.detail;
    this.fieldErrors = problem.errors ?? [];
    this.retryAfter = retryAfter;
  }
}

type Result<T> = { data?: T; error?: unknown; response: Response };

/** The answer's data, or an [`ApiProblem`] thrown. */
export async function call<T>(pending: Promise<Result<T>>): Promise<T> {
  let result: Result<T>;
  try {
    result = await pending;
  } catch {
    throw new ApiProblem(0, { title: "network" });
  }
  const { data, error, response } = result;
  if (response.ok) return data as T;
  const problem = (typeof error === "object" && error !== null ? error : {}) as Partial<Problem>;
  const retry = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  throw new ApiProblem(response.status, problem, Number.isFinite(retry) ? retry : null);
}

/** A fresh `Idempotency-Key`. */
export function idempotencyKey(): string {
  return crypto.randomUUID();
}

// Headers the browser sets itself and refuses from scripts.
const FORBIDDEN = new Set(["content-length", "host", "connection"]);

/** PUTs a file to a presigned URL with the headers the upload was signed with. */
export async function putToStorage(
  url: string,
  headers: Record<string, string>,
  file: Blob,
): Promise<void> {
  const sent = new Headers();
  for (const [name, value] of Object.entries(headers)) {
    if (!FORBIDDEN.has(name.toLowerCase())) sent.set(name, value);
  }
  let response: Response;
  try {
    response = await fetch(url, { method: "PUT", headers: sent, body: file });
  } catch {
    throw new ApiProblem(0, { title: "network" });
  }
  // Read the (empty) answer to its end: a body left unread counts as an aborted load.
  await response.arrayBuffer().catch(() => undefined);
  if (!response.ok) throw new ApiProblem(response.status, { code: "upload_failed" });
}
