// Drives the twin viewer in headless Chromium (Debian's package, through playwright-core):
// loads the page, waits until the tiles of the view are loaded, clicks at the screen position
// of a given point (a building's roof) and reads the attribute panel.
// Usage: node tests/js/viewer_pick.mjs URL LONGITUDE LATITUDE HEIGHT [SCREENSHOT.png]
// Prints one JSON object: {errors: [console errors], title, attributes, clickedAt, layers}.
import { chromium } from "playwright-core";

const [url, longitude, latitude, height, screenshot] = process.argv.slice(2);
const executablePath = process.env.TWIN_CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-dev-shm-usage",
  ],
});
const errors = [];
const result = { errors };
try {
  const page = await browser.newPage({ viewport: { width: 1024, height: 768 } });
  page.on("console", (message) => { if (message.type() === "error") errors.push(message.text()); });
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("requestfailed", (request) => errors.push(`request failed: ${request.url()}`));
  page.on("request", (request) => {
    const address = request.url().replace(/^blob:/, "");
    if (!address.startsWith(new URL(url).origin) && !address.startsWith("data:")) {
      errors.push(`request outside the server: ${request.url()}`);
    }
  });
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => window.twinViewer !== undefined, null, { timeout: 60000 });
  await page.evaluate(() => window.twinViewer.ready);
  result.layers = await page.evaluate(() => Object.keys(window.twinViewer.tilesets));
  const [lon, lat, h] = [Number(longitude), Number(latitude), Number(height)];
  await page.evaluate(([lon, lat, h]) => window.twinViewer.lookDownAt(lon, lat, h, 150), [lon, lat, h]);
  await page.evaluate(() => window.twinViewer.tilesLoaded());
  // Let a few frames render so that the loaded content is drawn and pickable.
  await page.evaluate(() => new Promise((resolve) => {
    let frames = 0;
    const remove = window.twinViewer.viewer.scene.postRender.addEventListener(() => {
      if (++frames >= 10) { remove(); resolve(); }
    });
    window.twinViewer.viewer.scene.requestRender();
  }));
  const position = await page.evaluate(([lon, lat, h]) => window.twinViewer.screenPosition(lon, lat, h), [lon, lat, h]);
  result.clickedAt = position;
  if (position) {
    await page.mouse.click(position.x, position.y);
    await page.waitForSelector("#building:not([hidden])", { timeout: 20000 }).catch(() => {});
    result.title = await page.textContent("#building-id");
    result.attributes = await page.evaluate(() => Object.fromEntries(
      [...document.querySelectorAll("#attributes tr")].map((row) => [row.dataset.property, row.querySelector("td").textContent])));
  }
  if (screenshot) await page.screenshot({ path: screenshot });
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result));
