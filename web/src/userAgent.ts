// A short "what and where from" for a User-Agent header, as account security pages show
// it ("Chrome 131 on Windows", "curl 8.5.0"). A few patterns, no library: the log needs a
// hint a person recognises, not a device database.

export type Device = {
  /** The browser or program ("Chrome", "curl"), or null when none is recognised. */
  client: string | null;
  /** Its major version for a browser, the whole version for a program. */
  version: string | null;
  /** The system ("Windows", "iPhone"), or null. */
  os: string | null;
};

// Order matters: an iPhone's agent says "like Mac OS X", Android's says "Linux", and
// HarmonyOS's may say "Android".
const SYSTEMS: [RegExp, string][] = [
  [/\b(?:iPhone|iPod)\b/, "iPhone"],
  [/\biPad\b/, "iPad"],
  [/\b(?:OpenHarmony|HarmonyOS)\b/, "HarmonyOS"],
  [/\bAndroid\b/, "Android"],
  [/\bCrOS\b/, "ChromeOS"],
  [/\bWindows\b|\bWin(?:32|64)\b/, "Windows"],
  [/\bMac OS X\b|\bMacintosh\b/, "macOS"],
  [/\bLinux\b|\bX11\b/, "Linux"],
];

// Order matters: apps embedding a browser and Chromium's derivatives also say "Chrome" and
// "Safari"; Chrome also says "Safari".
const BROWSERS: [RegExp, string][] = [
  [/\bMicroMessenger\/(\d+)/, "WeChat"],
  [/\bFBAV\/(\d+)/, "Facebook"],
  [/\bFB(?:AN|_IAB)\//, "Facebook"],
  [/\bEdg(?:e|A|iOS)?\/(\d+)/, "Edge"],
  [/\b(?:OPR|OPiOS|Opera)\/(\d+)/, "Opera"],
  [/\bSamsungBrowser\/(\d+)/, "Samsung Internet"],
  [/\bUCBrowser\/(\d+)/, "UC Browser"],
  [/\bM?QQBrowser\/(\d+)/, "QQ Browser"],
  [/\bHuaweiBrowser\/(\d+)/, "Huawei Browser"],
  [/\b(?:Firefox|FxiOS)\/(\d+)/, "Firefox"],
  [/\bHeadlessChrome\/(\d+)/, "Headless Chrome"],
  [/\bChromium\/(\d+)/, "Chromium"],
  [/\b(?:Chrome|CriOS)\/(\d+)/, "Chrome"],
  [/\bVersion\/(\d+)(?:\.\d+)*(?: Mobile\/\S+)? Safari\//, "Safari"],
  [/\bSafari\//, "Safari"],
  [/\bMSIE (\d+)|\bTrident\/.*\brv:(\d+)/, "Internet Explorer"],
];

// A program names itself first: "curl/8.5.0", "python-requests/2.32.3", "Go-http-client/2.0".
const PROGRAM = /^([A-Za-z][\w.+-]{0,39})(?:\/([\w.+-]{1,20}))?/;

export function parseUserAgent(agent: string): Device {
  const ua = agent.trim();
  const os = SYSTEMS.find(([pattern]) => pattern.test(ua))?.[1] ?? null;
  if (/^Mozilla\//.test(ua)) {
    for (const [pattern, client] of BROWSERS) {
      const found = pattern.exec(ua);
      if (found) return { client, version: found[1] ?? found[2] ?? null, os };
    }
    return { client: null, version: null, os };
  }
  const program = PROGRAM.exec(ua);
  return { client: program?.[1] ?? null, version: program?.[2] ?? null, os };
}

/** The words shown, given the two sentences of the language (see `security.device*`). */
export function deviceSummary(
  agent: string | null | undefined,
  words: {
    clientOnOs: (client: string, os: string) => string;
    browserOnOs: (os: string) => string;
  },
): string | null {
  const ua = agent?.trim();
  if (!ua) return null;
  const { client, version, os } = parseUserAgent(ua);
  const named = client && (version ? `${client} ${version}` : client);
  if (named && os) return words.clientOnOs(named, os);
  if (named) return named;
  if (os) return words.browserOnOs(os);
  // Nothing recognised: the start of what was sent, so the person still sees something.
  return ua.length > 48 ? `${ua.slice(0, 47)}…` : ua;
}
