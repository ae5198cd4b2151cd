import { describe, expect, it } from "vitest";
import { TABLES, format } from "./i18n";
import type { Language } from "./i18n";
import { deviceSummary, parseUserAgent } from "./userAgent";

const words = (lang: Language) => ({
  clientOnOs: (client: string, os: string) =>
    format(TABLES[lang]["security.device"], { client, os }),
  browserOnOs: (os: string) => format(TABLES[lang]["security.deviceOs"], { os }),
});
const summary = (ua: string | null | undefined, lang: Language = "en") =>
  deviceSummary(ua, words(lang));

const CHROME_WIN =
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

// Real agents as browsers and programs send them.
const AGENTS: [string, string][] = [
  [CHROME_WIN, "Chrome 131 on Windows"],
  [`${CHROME_WIN} Edg/131.0.2903.86`, "Edge 131 on Windows"],
  [`${CHROME_WIN} OPR/116.0.0.0`, "Opera 116 on Windows"],
  [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
    "Safari 17 on macOS",
  ],
  [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Safari 17 on iPhone",
  ],
  [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
    "Chrome 131 on iPhone",
  ],
  [
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/132.0 Mobile/15E148 Safari/605.1.15",
    "Firefox 132 on iPad",
  ],
  [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Firefox 128 on Linux",
  ],
  [
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Chrome 131 on Android",
  ],
  [
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
    "Samsung Internet 25 on Android",
  ],
  [
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Chrome 131 on ChromeOS",
  ],
  [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
    "Headless Chrome 131 on Linux",
  ],
  [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN",
    "WeChat 8 on iPhone",
  ],
  [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/450.0.0.38.108;FBBV/564431005]",
    "Facebook 450 on iPhone",
  ],
  [
    "Mozilla/5.0 (Phone; OpenHarmony 4.1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.0.0 Safari/537.36 ArkWeb/4.1.6.1 Mobile HuaweiBrowser/5.0.4.300",
    "Huawei Browser 5 on HarmonyOS",
  ],
  [
    "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
    "Internet Explorer 11 on Windows",
  ],
  ["curl/8.5.0", "curl 8.5.0"],
  ["python-requests/2.32.3", "python-requests 2.32.3"],
  ["Go-http-client/2.0", "Go-http-client 2.0"],
  ["node", "node"],
  ["Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230901.001)", "Dalvik 2.1.0 on Android"],
  ["Mozilla/5.0 (X11; Linux x86_64) SomethingNew/1.0", "A browser on Linux"],
];

describe("the device summary of a user agent", () => {
  for (const [agent, expected] of AGENTS)
    it(`reads "${agent.slice(0, 60)}…" as "${expected}"`, () => {
      expect(summary(agent)).toBe(expected);
    });

  it("follows the language", () => {
    expect(summary(CHROME_WIN, "zh-CN")).toBe("Windows 上的 Chrome 131");
    expect(summary("Mozilla/5.0 (X11; Linux x86_64) Unknown", "zh-CN")).toBe("Linux 上的浏览器");
    expect(summary("curl/8.5.0", "zh-CN")).toBe("curl 8.5.0");
  });

  it("is nothing when no agent was sent", () => {
    expect(summary(null)).toBeNull();
    expect(summary(undefined)).toBeNull();
    expect(summary("")).toBeNull();
    expect(summary("   ")).toBeNull();
  });

  it("shows the start of an agent it cannot read, never all of a long one", () => {
    expect(summary("¿qué? 1")).toBe("¿qué? 1");
    const long = summary(`(${"x".repeat(511)}`);
    expect(long).toHaveLength(48);
    expect(long?.endsWith("…")).toBe(true);
  });

  it("keeps a program's name and version short", () => {
    const { client, version } = parseUserAgent(`${"a".repeat(100)}/${"1".repeat(100)}`);
    expect(client?.length).toBeLessThanOrEqual(40);
    expect(version).toBeNull();
  });
});
