// The change form's schedule preview, live: as the schedule or the time zone
// changes, ask the admin's preview view and show the fragment it renders.
'use strict';
{
    function setUp() {
        const preview = document.getElementById('sisy-schedule-preview');
        const schedule = document.getElementById('id_schedule');
        const zone = document.getElementById('id_timezone');
        if (!preview || !schedule || !zone) {
            return;
        }
        let timer = null;
        let asked = 0;

        async function refresh() {
            const mine = ++asked;
            const url = new URL(preview.dataset.url, window.location.href);
            url.searchParams.set('schedule', schedule.value);
            url.searchParams.set('timezone', zone.value);
            preview.setAttribute('aria-busy', 'true');
            try {
                const response = await fetch(url, {
                    credentials: 'same-origin',
                    headers: {Accept: 'application/json'},
                });
                const answer = await response.json();
                if (mine === asked) {
                    preview.innerHTML = answer.html || '';
                }
            } catch (error) {
                if (mine === asked) {
                    preview.textContent = 'No preview: ' + error;
                }
            } finally {
                if (mine === asked) {
                    preview.removeAttribute('aria-busy');
                }
            }
        }

        schedule.addEventListener('input', () => {
            clearTimeout(timer);
            timer = setTimeout(refresh, 250);
        });
        zone.addEventListener('change', refresh);
    }

    if (document.readyState === 'loading') {
        document.addEventListener('DOMContentLoaded', setUp);
    } else {
        setUp();
    }
}
