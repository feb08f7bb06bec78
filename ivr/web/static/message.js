// Words light up as the recording plays (times from the stored transcript).
(function () {
  const player = document.getElementById('player');
  const words = [...document.querySelectorAll('#transcript .w')];
  if (!player || !words.length) return;
  player.addEventListener('timeupdate', () => {
    const t = player.currentTime;
    for (const w of words) w.classList.toggle('now', t >= Number(w.dataset.start) && t < Number(w.dataset.end));
  });
})();

// The control buttons (stop, cancel, retract) ask once more (inline handlers are barred by the CSP).
for (const form of document.querySelectorAll('form[data-confirm]')) {
  form.addEventListener('submit', (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
}
