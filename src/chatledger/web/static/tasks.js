// The user's tasks, as the agent's tools left them.

import { h } from "./dom.js";

export function renderTasks(list, tasks) {
  list.replaceChildren(
    ...tasks.map((task) =>
      h(
        "li",
        { class: "task", "data-completed": task.completed ? "true" : "false" },
        h("span", { class: "task-id" }, `#${task.id}`),
        h("span", { class: "task-title" }, task.title),
        task.completed && h("span", { class: "task-done" }, "done"),
        task.description && h("p", { class: "task-description" }, task.description),
      ),
    ),
  );
  if (tasks.length === 0) list.append(h("li", { class: "empty" }, "No tasks yet."));
}
