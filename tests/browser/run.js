// The browser side of the gateway's browser test: Debian's Chromium, driven by playwright-core.
//
//   node run.js PAGE_URL GATEWAY_URL TOKEN
//
// Opens PAGE_URL (served from the origin under test) and, from that page, calls the gateway as a
// browser agent UI would: a cross-origin fetch with an Authorization header (a preflight first),
// and a WebSocket whose token rides in the subprotocol `portcullis.bearer.<token>` (browsers
// cannot set headers on a WebSocket). Prints one JSON line with what the page saw.
const { chromium } = require('playwright-core');

const [pageUrl, gateway, token] = process.argv.slice(2);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // The gateway's certificate is made by the test's own CA.
      '--ignore-certificate-errors'],
  });
  try {
    const page = await browser.newPage();
    await page.goto(pageUrl);
    const seen = await page.evaluate(async ({ gateway, token }) => {
      const out = {};
      try {
        const answer = await fetch(`${gateway}/v1/models`, {
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        });
        out.fetch = { status: answer.status, body: (await answer.text()).slice(0, 200) };
      } catch (e) {
        out.fetch = { error: String(e) };
      }
      try {
        const refused = await fetch(`${gateway}/v1/models`);
        out.refusal = { status: refused.status, type: refused.headers.get('content-type') };
      } catch (e) {
        out.refusal = { error: String(e) };
      }
      out.socket = await new Promise((resolve) => {
        const wsUrl = gateway.replace('https://', 'wss://') + '/v1/realtime';
        let ws;
        try {
          ws = new WebSocket(wsUrl, [`portcullis.bearer.${token}`, 'realtime-v1']);
        } catch (e) {
          resolve({ error: String(e) });
          return;
        }
        const timer = setTimeout(() => resolve({ error: 'timeout' }), 10000);
        ws.onopen = () => ws.send('hello from the browser');
        ws.onmessage = (event) => {
          clearTimeout(timer);
          const result = { protocol: ws.protocol, echo: event.data };
          ws.onclose = (close) => resolve({ ...result, close: close.code });
          ws.close(1000, 'done');
        };
        ws.onerror = () => { clearTimeout(timer); resolve({ error: 'socket error' }); };
      });
      return out;
    }, { gateway, token });
    console.log(JSON.stringify(seen));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
