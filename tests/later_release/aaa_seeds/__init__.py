"""An app with Sisy's documented data migrations; its label, ``aaa_seeds``, sorts before ``sisy``."""
