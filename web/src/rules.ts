// The client-side rules: what a generation costs and what the API would refuse, checked
// before anything is sent (the API checks again; these only spare a person a round trip).
import type { Model, UploadContentType } from "./api/client";

export const PROMPT_MAX_CHARS = 4000;
export const MAX_IMAGES = 4;
export const MAX_UPLOAD_BYTES = 10 * 1024 * 1024;
export const UPLOAD_TYPES: readonly UploadContentType[] = ["image/png", "image/jpeg", "image/webp"];

/** Characters as the API counts them (Unicode scalar values, after trimming). */
export function promptLength(prompt: string): number {
  return [...prompt.trim()].length;
}

/** `credits_per_image × n`. */
export function cost(model: Pick<Model, "credits_per_image">, n: number): number {
  return model.credits_per_image * n;
}

/** A message key of the i18n tables, with the values it names. */
export type Problem = { key: MessageKey; values?: Record<string, string | number> };
export type MessageKey =
  | "error.promptEmpty"
  | "error.promptTooLong"
  | "error.nRange"
  | "error.aspectRatio"
  | "error.modelUnavailable"
  | "error.tooManyReferences"
  | "error.editUnsupported"
  | "error.textUnsupported"
  | "error.notEnoughCredits"
  | "error.uploadType"
  | "error.uploadSize"
  | "error.uploadEmpty";

export type Draft = {
  prompt: string;
  n: number;
  aspectRatio: string;
  references: readonly string[];
};

/** Field → what is wrong with it; empty when the draft may be sent. */
export function validateDraft(
  draft: Draft,
  model: Model,
): Partial<Record<"prompt" | "n" | "aspect_ratio" | "model" | "reference_images", Problem>> {
  const errors: ReturnType<typeof validateDraft> = {};
  const length = promptLength(draft.prompt);
  if (length === 0) errors.prompt = { key: "error.promptEmpty" };
  else if (length > PROMPT_MAX_CHARS)
    errors.prompt = { key: "error.promptTooLong", values: { max: PROMPT_MAX_CHARS, length } };
  if (!Number.isInteger(draft.n) || draft.n < 1 || draft.n > MAX_IMAGES)
    errors.n = { key: "error.nRange", values: { max: MAX_IMAGES } };
  if (!model.aspect_ratios.includes(draft.aspectRatio))
    errors.aspect_ratio = { key: "error.aspectRatio" };
  if (!model.available) errors.model = { key: "error.modelUnavailable" };
  const editing = draft.references.length > 0;
  if (editing && !model.modes.includes("image-edit"))
    errors.reference_images = { key: "error.editUnsupported" };
  else if (!editing && !model.modes.includes("text-to-image"))
    errors.reference_images = { key: "error.textUnsupported" };
  else if (draft.references.length > model.max_reference_images)
    errors.reference_images = {
      key: "error.tooManyReferences",
      values: { max: model.max_reference_images },
    };
  return errors;
}

/**
 * A warning, not a refusal, when the known balance is short: the balance shown may be
 * stale (a purchase landing in another tab), so the API has the last word (402).
 */
export function shortfall(
  model: Pick<Model, "credits_per_image">,
  n: number,
  balance: number | null,
): Problem | null {
  if (balance === null || cost(model, n) <= balance) return null;
  return { key: "error.notEnoughCredits", values: { cost: cost(model, n), balance } };
}

/** Why a file cannot be a reference image, or null when it can. */
export function checkUpload(file: { type: string; size: number }): Problem | null {
  if (!(UPLOAD_TYPES as readonly string[]).includes(file.type)) return { key: "error.uploadType" };
  if (file.size === 0) return { key: "error.uploadEmpty" };
  if (file.size > MAX_UPLOAD_BYTES)
    return { key: "error.uploadSize", values: { max: MAX_UPLOAD_BYTES / (1024 * 1024) } };
  return null;
}
