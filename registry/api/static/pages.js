// Copy buttons: <button class="copy" data-copy="#id"> copies the text of #id (no inline scripts).
for (const button of document.querySelectorAll("button.copy[data-copy]")) {
  button.addEventListener("click", async () => {
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    const text = source.innerText;
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const range = document.createRange();  // no clipboard API (plain http): select it instead
      range.selectNodeContents(source);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      document.execCommand("copy");
    }
    const label = button.textContent;
    button.textContent = "copied";
    setTimeout(() => { button.textContent = label; }, 1200);
  });
}
