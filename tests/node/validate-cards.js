// Validates Adaptive Cards with the official renderer (npm `adaptivecards`, pinned in
// package-lock.json): parse, then validateProperties(). Reads a JSON array of cards on stdin,
// prints a JSON array with, for each card, the list of parse and validation messages
// (empty = valid). Used by tests/it/render_cards.rs.
const AC = require("adaptivecards/dist/adaptivecards.js");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const cards = JSON.parse(input);
  const results = cards.map((json) => {
    const card = new AC.AdaptiveCard();
    const context = new AC.SerializationContext();
    card.parse(json, context);
    const messages = [];
    for (let i = 0; i < context.eventCount; i++) {
      messages.push("parse: " + context.getEventAt(i).message);
    }
    for (const e of card.validateProperties().validationEvents) {
      messages.push("validate: " + e.message);
    }
    return messages;
  });
  process.stdout.write(JSON.stringify(results));
});
