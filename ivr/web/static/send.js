// Preview: the server speaks the typed text as the members will hear it.
(function () {
  const button = document.getElementById('preview');
  const audio = document.getElementById('preview-audio');
  const error = document.getElementById('preview-error');
  button.addEventListener('click', async () => {
    error.textContent = '';
    const params = new URLSearchParams({text: document.getElementById('text').value, bins: document.getElementById('bins').value});
    const reply = await fetch('/send/preview?' + params);
    if (!reply.ok) { error.textContent = await reply.text(); return; }
    audio.src = URL.createObjectURL(await reply.blob());
    audio.hidden = false;
    audio.play();
  });
})();
