// The twin viewer: every 3D Tiles layer of the output folder on a plain globe, offline.
// No Cesium ion (no token, no online imagery or terrain): the globe is a solid colour.
// `window.twinViewer` exposes the viewer and a few helpers for scripted checks.
"use strict";

Cesium.Ion.defaultAccessToken = "";

const viewer = new Cesium.Viewer("globe", {
  baseLayer: false,
  baseLayerPicker: false,
  terrainProvider: new Cesium.EllipsoidTerrainProvider(),
  geocoder: false,
  homeButton: false,
  sceneModePicker: false,
  navigationHelpButton: false,
  animation: false,
  timeline: false,
  fullscreenButton: false,
  infoBox: false,
  selectionIndicator: false,
});
viewer.scene.globe.baseColor = Cesium.Color.fromCssColorString("#d8dcd3");
viewer.scene.skyAtmosphere.show = false;
viewer.scene.globe.showGroundAtmosphere = false;

const statusLine = document.getElementById("status");
const tilesets = {};
let highlighted;

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function showBuilding(feature) {
  if (highlighted) highlighted.feature.color = highlighted.colour;
  const section = document.getElementById("building");
  if (!feature) {
    section.hidden = true;
    highlighted = undefined;
    return;
  }
  highlighted = { feature, colour: feature.color.clone() };
  feature.color = Cesium.Color.YELLOW;
  document.getElementById("building-id").textContent = `Building ${feature.getProperty("id")}`;
  const table = document.getElementById("attributes");
  table.replaceChildren();
  for (const name of feature.getPropertyIds()) {
    if (name === "id") continue;
    const value = feature.getProperty(name);
    const row = table.insertRow();
    row.dataset.property = name;
    const header = document.createElement("th");
    header.textContent = name;
    row.appendChild(header);
    row.insertCell().textContent = value === undefined ? "" : Array.isArray(value) ? value.join(", ") : String(value);
  }
  section.hidden = false;
}

new Cesium.ScreenSpaceEventHandler(viewer.scene.canvas).setInputAction((click) => {
  // The first building under the cursor, looking through the point cloud's points if they are on top.
  const building = viewer.scene.drillPick(click.position, 8).find(
    (picked) => picked instanceof Cesium.Cesium3DTileFeature && picked.getProperty("id") !== undefined);
  showBuilding(building);
}, Cesium.ScreenSpaceEventType.LEFT_CLICK);

function addLayerToggle(layer, tileset) {
  const label = document.createElement("label");
  const box = document.createElement("input");
  box.type = "checkbox";
  box.checked = tileset.show;
  box.addEventListener("change", () => { tileset.show = box.checked; });
  label.append(box, ` ${layer.name}`);
  const line = document.createElement("div");
  line.appendChild(label);
  document.getElementById("layers").appendChild(line);
}

async function loadLayers() {
  const layers = await (await fetch("/layers.json")).json();
  for (const layer of layers) {
    const tileset = await Cesium.Cesium3DTileset.fromUrl(layer.url);
    if (layer.kind === "pointcloud") {
      const metadata = tileset.metadata;
      const coloured = metadata && metadata.hasProperty("coloured") && metadata.getProperty("coloured");
      tileset.style = new Cesium.Cesium3DTileStyle(coloured ? { pointSize: 2 } : { pointSize: 2, color: "color('#5c7d99')" });
      tileset.pointCloudShading.attenuation = true;
    }
    viewer.scene.primitives.add(tileset);
    tilesets[layer.kind] = tileset;
    addLayerToggle(layer, tileset);
  }
  const first = tilesets.buildings || Object.values(tilesets)[0];
  if (first) await viewer.zoomTo(first, new Cesium.HeadingPitchRange(0, Cesium.Math.toRadians(-45), 0));
  setStatus(`${layers.length} layer${layers.length === 1 ? "" : "s"}`);
}

function tilesLoaded() {
  // Resolves once every layer has loaded the tiles the current view needs.
  return Promise.all(Object.values(tilesets).map((tileset) => new Promise((resolve) => {
    if (tileset.tilesLoaded) return resolve();
    const remove = tileset.allTilesLoaded.addEventListener(() => { remove(); resolve(); });
  })));
}

const ready = loadLayers().catch((error) => {
  setStatus(`Could not load the tiles: ${error.message}`, true);
  console.error(error);
  throw error;
});

window.twinViewer = {
  viewer,
  tilesets,
  ready,
  tilesLoaded,
  lookDownAt(longitude, latitude, height, range) {
    viewer.camera.setView({
      destination: Cesium.Cartesian3.fromDegrees(longitude, latitude, height + range),
      orientation: { heading: 0, pitch: -Cesium.Math.PI_OVER_TWO, roll: 0 },
    });
  },
  screenPosition(longitude, latitude, height) {
    viewer.scene.render();
    const position = Cesium.SceneTransforms.worldToWindowCoordinates(
      viewer.scene, Cesium.Cartesian3.fromDegrees(longitude, latitude, height));
    return position ? { x: position.x, y: position.y } : null;
  },
};
