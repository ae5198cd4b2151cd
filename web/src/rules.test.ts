import { describe, expect, it } from "vitest";
import type { Model } from "./api/client";
import { checkUpload, cost, promptLength, shortfall, validateDraft } from "./rules";

const banana: Model = {
  id: "nano-banana",
  name: "Nano Banana",
  credits_per_image: 2,
  modes: ["text-to-image", "image-edit"],
  max_reference_images: 3,
  aspect_ratios: ["1:1", "16:9"],
  available: true,
};
const draft = { prompt: "a cat", n: 1, aspectRatio: "1:1", references: [] as string[] };

describe("the cost shown before sending", () => {
  it("is the model's price per image times the images asked for", () => {
    expect(cost(banana, 1)).toBe(2);
    expect(cost(banana, 4)).toBe(8);
    expect(cost({ credits_per_image: 8 }, 3)).toBe(24);
  });

  it("warns, without refusing, when the known balance is short", () => {
    expect(shortfall(banana, 4, 7)).toEqual({
      key: "error.notEnoughCredits",
      values: { cost: 8, balance: 7 },
    });
    expect(shortfall(banana, 4, 8)).toBeNull();
    expect(shortfall(banana, 4, null)).toBeNull();
  });
});

describe("a draft is checked before it is sent", () => {
  it("passes when everything is within the model's limits", () => {
    expect(validateDraft(draft, banana)).toEqual({});
  });

  it("refuses an empty or blank prompt", () => {
    expect(validateDraft({ ...draft, prompt: "   " }, banana).prompt?.key).toBe(
      "error.promptEmpty",
    );
  });

  it("counts characters as the API does: trimmed, one per code point", () => {
    expect(promptLength("  ab  ")).toBe(2);
    expect(promptLength("🍌🍌")).toBe(2);
    expect(validateDraft({ ...draft, prompt: "🍌".repeat(4000) }, banana)).toEqual({});
    expect(validateDraft({ ...draft, prompt: "x".repeat(4001) }, banana).prompt).toEqual({
      key: "error.promptTooLong",
      values: { max: 4000, length: 4001 },
    });
  });

  it("refuses n outside 1 to 4", () => {
    expect(validateDraft({ ...draft, n: 0 }, banana).n?.key).toBe("error.nRange");
    expect(validateDraft({ ...draft, n: 5 }, banana).n?.key).toBe("error.nRange");
    expect(validateDraft({ ...draft, n: 4 }, banana).n).toBeUndefined();
  });

  it("refuses an aspect ratio the model lacks", () => {
    expect(validateDraft({ ...draft, aspectRatio: "9:21" }, banana).aspect_ratio?.key).toBe(
      "error.aspectRatio",
    );
  });

  it("refuses more reference images than the model takes", () => {
    const refs = ["upl_1", "upl_2", "upl_3", "upl_4"];
    expect(validateDraft({ ...draft, references: refs }, banana).reference_images).toEqual({
      key: "error.tooManyReferences",
      values: { max: 3 },
    });
  });

  it("refuses an unavailable model, and an edit with a model that cannot edit", () => {
    expect(validateDraft(draft, { ...banana, available: false }).model?.key).toBe(
      "error.modelUnavailable",
    );
    const textOnly: Model = { ...banana, modes: ["text-to-image"] };
    expect(validateDraft({ ...draft, references: ["upl_1"] }, textOnly).reference_images?.key).toBe(
      "error.editUnsupported",
    );
    const editOnly: Model = { ...banana, modes: ["image-edit"] };
    expect(validateDraft(draft, editOnly).reference_images?.key).toBe("error.textUnsupported");
  });
});

describe("an upload is checked before it is sent", () => {
  it("takes PNG, JPEG and WebP up to 10 MiB", () => {
    expect(checkUpload({ type: "image/png", size: 1 })).toBeNull();
    expect(checkUpload({ type: "image/jpeg", size: 10 * 1024 * 1024 })).toBeNull();
    expect(checkUpload({ type: "image/webp", size: 5000 })).toBeNull();
  });

  it("refuses other types, empty files and larger files", () => {
    expect(checkUpload({ type: "image/gif", size: 10 })?.key).toBe("error.uploadType");
    expect(checkUpload({ type: "image/png", size: 0 })?.key).toBe("error.uploadEmpty");
    expect(checkUpload({ type: "image/png", size: 10 * 1024 * 1024 + 1 })?.key).toBe(
      "error.uploadSize",
    );
  });
});
