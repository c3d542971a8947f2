// The console: POSTs the query to /graphql with the token from this tab's storage.
"use strict";
const $ = (id) => document.getElementById(id);
$("token").value = sessionStorage.getItem("inbox-token") || "";
$("token").addEventListener("change", () => sessionStorage.setItem("inbox-token", $("token").value.trim()));

async function run() {
  let variables;
  try {
    variables = JSON.parse($("variables").value || "{}");
  } catch (error) {
    $("answer").textContent = "The variables are not JSON: " + error.message;
    return;
  }
  const headers = { "content-type": "application/json" };
  const token = $("token").value.trim();
  if (token) headers.authorization = "Bearer " + token;
  $("answer").textContent = "…";
  try {
    const response = await fetch("/graphql", {
      method: "POST",
      headers,
      body: JSON.stringify({ query: $("query").value, variables }),
    });
    const text = await response.text();
    try {
      $("answer").textContent = JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      $("answer").textContent = response.status + " " + text;
    }
  } catch (error) {
    $("answer").textContent = "The server could not be reached: " + error.message;
  }
}

$("run").addEventListener("click", run);
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) run();
});
